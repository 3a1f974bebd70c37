"""A private JupyterLab and a headless Chromium for the browser tests.

``lab`` starts ``jupyter lab`` as a subprocess on 127.0.0.1 (a free port, a random token) with its
own config, data, runtime, settings and workspace folders, serving a temporary COPY of
``notebooks/`` (outputs stripped, so everything the tests see comes from this run, and the check
cell of ``tests/notebook_checks.py`` appended). The kernels get ``CAPSNET_FAST=1`` and import this
checkout's ``capslib``. A notebook whose sliders a session drives here executes here only: its
nbclient run in ``tests/test_notebooks.py`` is skipped (see ``pytest_collection_modifyitems``).
The server is stopped by its own process (terminate, then kill) in a finalizer, after its kernels
are shut down.

``browser`` launches Debian's Chromium (``/usr/bin/chromium``) through Playwright for Python.
Without Chromium or Playwright the browser tests skip with the reason, except under CI
(``CI=true``), where they fail: there a missing browser is a broken set-up, not an optional extra.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from notebook_checks import CHECK_CELL

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never `playwright install` (needs the internet)
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root in containers
    "--disable-gpu",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
]
LAB_START_TIMEOUT = 180  # seconds; the first start builds nothing, but a busy 2-core machine is slow
LAB_STOP_TIMEOUT = 20  # seconds between terminate and kill
SCREENSHOTS_ENV = "CAPSNET_SCREENSHOTS"

# Per-user settings for the private JupyterLab (written into its own settings folder).
LAB_SETTINGS = {
    # no "Would you like to receive official Jupyter news?" toast, no update check
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # every cell attached to the DOM, so prompts and outputs of off-screen cells can be checked
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

_screenshot_dir: Path | None = None  # reported at the end of the session (pytest_terminal_summary)


def missing_browser_reason() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip (or under ``CI=true``, fail) when Chromium or Playwright is missing."""
    reason = missing_browser_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, method: str = "GET", timeout: float = 10.0):
    """GET (or ``method``) ``url`` and decode its JSON body (None for an empty body)."""
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def stop_process(proc: subprocess.Popen, timeout: float = LAB_STOP_TIMEOUT) -> None:
    """Terminate ``proc`` (this process only, by its pid), then kill it if it does not exit."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class Lab:
    """A running private JupyterLab."""

    base_url: str  # http://127.0.0.1:<port>
    token: str
    root_dir: Path  # the temporary copy of notebooks/ it serves
    log: Path
    proc: subprocess.Popen

    def url(self, path: str) -> str:
        """``path`` under the server, with the token (``/lab/tree/x.ipynb`` -> a URL to open)."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        return http_json(self.url(f"/api/{path}"), method=method)

    def shutdown_kernels(self) -> None:
        """Shut every kernel of this server down (the server itself stays up)."""
        for kernel in self.api("kernels"):
            try:
                self.api(f"kernels/{kernel['id']}", method="DELETE")
            except urllib.error.HTTPError:
                pass  # already gone


def copy_notebooks(dest: Path) -> None:
    """Copy ``notebooks/`` to ``dest`` with outputs, execution counts and widget state stripped.

    The copy sits in a folder laid out like the repository (``dest/notebooks`` beside a
    ``capslib`` and a ``results`` link), so the notebooks' ``REPO`` lookup (the first parent of the working directory
    holding ``capslib/``) finds it and whatever they write under ``runs/`` stays in the copy.
    """
    (dest / "notebooks").mkdir(parents=True)
    (dest / "capslib").symlink_to(REPO / "capslib", target_is_directory=True)
    (dest / "results").symlink_to(REPO / "results", target_is_directory=True)  # committed results (09, 10) read
    for path in sorted((REPO / "notebooks").iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        target = dest / "notebooks" / path.name
        if path.suffix != ".ipynb":
            shutil.copy2(path, target)
            continue
        nb = json.loads(path.read_text())
        for cell in nb.get("cells", []):
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb.get("metadata", {}).pop("widgets", None)
        check = {"cell_type": "code", "execution_count": None, "id": "capsnet-tests-check", "metadata": {}}
        nb["cells"].append(check | {"outputs": [], "source": CHECK_CELL})  # as tests/test_notebooks.py does
        target.write_text(json.dumps(nb, indent=1))


def start_lab(tmp: Path) -> Lab:
    """Start ``jupyter lab`` serving a copy of the notebooks; return once ``/api/status`` answers."""
    copy_notebooks(tmp / "repo")
    root_dir = tmp / "repo" / "notebooks"
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir()
    for name, settings in LAB_SETTINGS.items():
        path = dirs["settings"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))

    env = dict(os.environ)
    env.update(
        CAPSNET_FAST="1",
        CAPSNET_DATA=env.get("CAPSNET_DATA", str(REPO / "data")),  # the bundled MNIST and pretrained model
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),  # this checkout's capslib
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        IPYTHONDIR=str(dirs["ipython"]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),  # one kernel thread: the browser needs the other core
    )
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as for a reader
    token = secrets.token_hex(16)
    log = tmp / "jupyterlab.log"
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root_dir}",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            "--LabApp.news_url=None",  # no announcements feed
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: read kernel status and execution counts
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # containers and CI run as root
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, cwd=root_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        lab = Lab(f"http://127.0.0.1:{port}", token, root_dir, log, proc)
        deadline = time.monotonic() + LAB_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                lab.api("status", method="GET")
                return lab
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
                last_error = repr(error)
                time.sleep(0.5)
        stop_process(proc)
        if "already in use" not in log_tail(log, 2000):
            break  # only a port clash is worth another try
    raise RuntimeError(f"JupyterLab did not answer /api/status ({last_error}); its log:\n{log_tail(log)}")


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected and the opt-in tests are skipped
def pytest_collection_modifyitems(config, items):
    """One execution per notebook: where this session runs a notebook's browser test (selected, not
    skipped, and a browser to run it in, or CI=true, where a missing one fails), that test's run in
    JupyterLab gets the checks of tests/test_notebooks.py, whose nbclient run of it is skipped."""
    if missing_browser_reason() is not None and os.environ.get("CI", "").lower() != "true":
        return  # the browser tests will skip: the nbclient runs stay
    in_browser = {
        item.callspec.params["name"]
        for item in items
        if getattr(item, "originalname", None) == "test_sliders_redraw_in_jupyterlab"
        and not item.get_closest_marker("skip")
    }
    for item in items:
        if getattr(item, "originalname", None) != "test_runs_in_fast_mode":
            continue
        name = item.callspec.params["path"].stem
        if name in in_browser:
            reason = f"{name} runs once, in JupyterLab: test_sliders_redraw_in_jupyterlab[{name}] checks that run"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def lab(request):
    """A private JupyterLab serving a stripped copy of ``notebooks/`` (see :func:`start_lab`)."""
    require_browser()  # no server at all when the tests would skip
    tmp = Path(tempfile.mkdtemp(prefix="capsnet-lab-"))
    server = start_lab(tmp)

    def stop():
        try:
            server.shutdown_kernels()
        except Exception:  # the server may be gone already; stopping it is what matters
            pass
        stop_process(server.proc)
        shutil.rmtree(tmp, ignore_errors=True)

    request.addfinalizer(stop)
    return server


@pytest.fixture(scope="session")
def browser(request):
    """Headless Debian Chromium driven by Playwright (one browser for the session)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    request.addfinalizer(playwright.stop)
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    request.addfinalizer(chromium.close)
    return chromium


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """``$CAPSNET_SCREENSHOTS`` if set (scripts/readme_screenshots.sh sets it), else ``screenshots``
    under pytest's base temporary folder, which pytest itself prunes to its last 3 runs: there to
    look at after a run (the folder is printed at its end), never left behind for good."""
    global _screenshot_dir
    chosen = os.environ.get(SCREENSHOTS_ENV)
    path = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots", numbered=False)
    path.mkdir(parents=True, exist_ok=True)
    _screenshot_dir = path
    return path


def pytest_terminal_summary(terminalreporter):
    if _screenshot_dir is not None:
        files = sorted(p.name for p in _screenshot_dir.glob("*.png"))
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(files)} screenshot(s) in {_screenshot_dir}")
