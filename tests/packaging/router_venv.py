"""The fresh virtualenv with `pip install .[router]`, built in the background from the moment the
test that needs it is collected: the install waits mostly on the package index and the build of
our own wheel, so started early it is ready by the time the packaging tests run and costs the
suite's wall time almost nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEST_NAME = "test_pip_install_router_extra_into_a_fresh_venv"


class RouterVenv:
    def __init__(self, root: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tp-router-venv-"))
        self.venv = self.folder / "venv"
        self.log = self.folder / "install.log"
        script = (f'"{sys.executable}" -m venv "{self.venv}" && '
                  f'"{self.venv}/bin/python" -m pip install -q "{root}[router]"')
        with open(self.log, "w") as out:
            self._proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def wait(self, timeout: float) -> None:
        """Until the install has ended; its output in the error when it failed."""
        code = self._proc.wait(timeout)
        if code != 0:
            raise AssertionError(f"pip install .[router] failed ({code}): {self.log.read_text()[-3000:]}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
