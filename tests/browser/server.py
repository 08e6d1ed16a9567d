"""A real, headless JupyterLab server for the browser tests.

The server runs from this venv (``<venv>/bin/jupyter lab``) on a free
localhost port with a random token, offline and quiet: no news feed, no
update check, no terminals, its own config/data/settings/runtime folders
(so nothing from the user's ``~/.jupyter`` leaks in), and one kernelspec,
``nnsight-lab-test``, whose argv is this interpreter (``sys.executable``)
with ``HF_HUB_OFFLINE=1``. Lab user settings written here: every cell
attached to the DOM (``windowingMode: none``, so off-screen widgets render
too), no autosave (the test saves explicitly), widget state saved into the
notebook (so the notebook-size check measures the real cost of a widget).

``window.jupyterapp`` is exposed (``--LabApp.expose_app_in_browser``), so
tests drive the notebook through Lab's own command registry: the same
commands the Run menu and the keyboard shortcuts call.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

KERNEL_NAME = "nnsight-lab-test"

#: User settings for JupyterLab, keyed by ``<package>/<plugin>`` file path.
LAB_SETTINGS: dict[str, dict] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jupyter_command() -> list[str]:
    """``<venv>/bin/jupyter lab`` for the venv running the tests."""
    jupyter = Path(sys.executable).parent / "jupyter"
    if jupyter.exists():
        return [str(jupyter), "lab"]
    return [sys.executable, "-m", "jupyterlab"]


@dataclass
class JupyterServer:
    """A running ``jupyter lab`` process and how to reach it."""

    proc: subprocess.Popen
    port: int
    token: str
    root_dir: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        request = urllib.request.Request(
            f"{self.base_url}/api/{path.lstrip('/')}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no server log>"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("status", timeout=2.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.2)
        raise TimeoutError(
            f"jupyter lab did not answer /api/status in {timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Shut kernels down through the API, then end the server's process group."""
        if self.proc.poll() is None:
            try:
                self.api("shutdown", method="POST", timeout=5.0)
                self.proc.wait(timeout=10)
            except Exception:
                pass
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def prepare_home(home: Path) -> dict[str, str]:
    """Private Jupyter folders, the kernelspec and Lab settings; returns the server's env."""
    dirs = {
        name: home / name for name in ("config", "data", "runtime", "settings", "work", "ipython")
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    _write_json(
        dirs["data"] / "kernels" / KERNEL_NAME / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nnsight_lab tests",
            "language": "python",
            "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        },
    )
    for plugin, settings in LAB_SETTINGS.items():
        _write_json(dirs["settings"] / f"{plugin}.jupyterlab-settings", settings)
    # The news pop-up ("Would you like to receive official Jupyter news?") is its own plugin;
    # the build check (is the Lab bundle up to date?) costs seconds on every page load.
    _write_json(
        dirs["config"] / "labconfig" / "page_config.json",
        {
            "disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True},
            "buildCheck": False,
            "buildAvailable": False,
        },
    )
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["work"]),
        IPYTHONDIR=str(dirs["ipython"]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_TOKEN", None)
    return env


def start_jupyter(root_dir: Path, home: Path, timeout: float = 60.0) -> JupyterServer:
    """Start ``jupyter lab`` serving ``root_dir``; returns once ``/api/status`` answers."""
    env = prepare_home(home)
    port, token = free_port(), secrets.token_hex(16)
    log_path = home / "jupyter.log"
    cmd = [
        *jupyter_command(),
        "--no-browser",
        f"--IdentityProvider.token={token}",  # ServerApp.token is its deprecated alias
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",  # the PyPI manager would query pypi.org
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
    ]
    if os.geteuid() == 0:  # CI containers run as root; Jupyter refuses that unless told
        cmd.append("--ServerApp.allow_root=True")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = JupyterServer(proc, port, token, root_dir, log_path, env)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
