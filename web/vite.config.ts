import { defineConfig } from "vite";

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
    proxy: { "/api": "http://127.0.0.1:5000", "/health": "http://127.0.0.1:5000" },
  },
});
