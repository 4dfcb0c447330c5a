import { defineConfig } from "vite";

// The dev server proxies the API to a flightlog server: port 5000 unless FLIGHTLOG_DEV_API names another
// (the e2e tests run the portal's sources against a server on a free port this way).
const api = process.env.FLIGHTLOG_DEV_API || "http://127.0.0.1:5000";

// Hashed asset names (Vite's default `assets/[name]-[hash].js`) let the server mark them immutable.
export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: { "/api": api, "/health": api },
  },
});
