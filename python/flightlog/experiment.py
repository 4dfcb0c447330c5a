"""Experiments: named groups of runs."""

from __future__ import annotations

from collections.abc import Mapping as _Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run
    from .script_run import ScriptRunConfig
    from .workspace import Workspace

__all__ = ["Experiment"]

if TYPE_CHECKING:  # pragma: no cover
    TagFilter = Union[None, str, Iterable[str], Mapping[str, Optional[str]]]


def _filter(value: TagFilter) -> Dict[str, Optional[str]]:
    """Tags/properties filter: a key, a list of keys (must be present), or a dict key → value (None: present)."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, _Mapping):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    return {str(k): None for k in value}


class Experiment:
    """A named group of runs in a workspace. ``Experiment(ws, name)`` gets the experiment called ``name``,
    creating it if it does not exist yet."""

    _workspace: "Workspace"
    _info: Dict[str, Any]

    def __init__(self, workspace: "Workspace", name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"experiment name must be a str, not {type(name).__name__}")
        self._workspace = workspace
        self._info: Dict[str, Any] = workspace._call("get_or_create_experiment", name=name)

    @classmethod
    def _from_info(cls, workspace: "Workspace", info: Dict[str, Any]) -> "Experiment":
        exp = cls.__new__(cls)
        exp._workspace = workspace
        exp._info = info
        return exp

    @classmethod
    def _by_id(cls, workspace: "Workspace", experiment_id: str) -> "Experiment":
        return cls._from_info(workspace, workspace._call("get_experiment", id=str(experiment_id)))

    @property
    def workspace(self) -> "Workspace":
        """The workspace the experiment lives in."""
        return self._workspace

    @property
    def id(self) -> str:
        """The experiment's id (a string holding an integer; "0" is Default)."""
        return str(self._info["id"])

    @property
    def name(self) -> str:
        """The experiment's unique name."""
        return self._info["name"]

    @property
    def tags(self) -> Dict[str, str]:
        """The experiment's tags."""
        return dict(self._info.get("tags") or {})

    def start_logging(
        self,
        display_name: Optional[str] = None,
        description: Optional[str] = None,
        snapshot_directory: Optional[str] = None,
        *,
        tags: Optional[Mapping[str, str]] = None,
        properties: Optional[Mapping[str, str]] = None,
    ) -> "Run":
        """Starts an interactive run (status Running) and returns it.

        ``snapshot_directory`` uploads that folder's files (skipping ``.git``, virtual environments, caches and
        anything matched by a ``.gitignore``/``.amlignore``/``.flightlogignore`` in it) under ``snapshot/``.
        Use it as a context manager to complete the run at the end of the block (failed if it raises).
        """
        from .run import Run

        return Run._create(
            self,
            display_name=display_name,
            description=description,
            snapshot_directory=snapshot_directory,
            tags=tags,
            properties=properties,
        )

    def submit(self, config: "ScriptRunConfig", tags: Optional[Mapping[str, str]] = None) -> "Run":
        """Runs ``config`` (a :class:`flightlog.ScriptRunConfig`) as a tracked run and returns it once the job has
        started; the job goes on after this returns (and after this interpreter exits). Needs a tracking server.
        See ``flightlog/script_run.py``."""
        from . import script_run

        return script_run.submit(self, config, tags)

    def get_runs(
        self,
        tags: TagFilter = None,
        properties: TagFilter = None,
        status: Union[None, str, Iterable[str]] = None,
        include_children: bool = False,
    ) -> List["Run"]:
        """The experiment's runs, newest first. ``tags``/``properties``: a key, a list of keys that must be
        present, or a dict of required values (None: present); ``status``: a status name or a list of them;
        child runs are left out unless ``include_children``."""
        from .run import Run

        statuses = [status] if isinstance(status, str) else list(status or [])
        query: Dict[str, Any] = {
            "experiment_ids": [self.id],
            "statuses": statuses,
            "top_level_only": not include_children,
            "tags": _filter(tags),
            "properties": _filter(properties),
        }
        return [Run._from_info(self._workspace, info, experiment=self) for info in self._workspace._call("list_runs", query=query)]

    def __reduce__(self) -> Any:
        # Pickled (for another process), an experiment is its workspace and what was read of it.
        return (_experiment_from_info, (self._workspace, self._info))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Experiment) and other._workspace == self._workspace and other.id == self.id

    def __hash__(self) -> int:
        return hash((self._workspace, self.id))

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, id={self.id!r}, workspace={self._workspace!r})"

    def _repr_html_(self) -> str:
        """A notebook cell's view: name, id, and a link to the experiment's page in the portal."""
        import html

        url = self._workspace.portal_url(f"experiments/{self.id}")
        link = (f'<a href="{html.escape(url)}" target="_blank" rel="noopener">Open in flightlog portal</a>'
                if url else f"local: {html.escape(str(self._workspace.data_dir))}")
        return (
            "<table><tr><th>Name</th><th>Id</th><th>Details page</th></tr>"
            f"<tr><td>{html.escape(self.name)}</td><td>{html.escape(self.id)}</td><td>{link}</td></tr></table>"
        )


def _experiment_from_info(workspace: "Workspace", info: Dict[str, Any]) -> Experiment:
    return Experiment._from_info(workspace, info)
