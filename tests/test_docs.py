"""The Sphinx docs build offline with warnings as errors, native extension or not.

``sphinx-build -W --keep-going -b html docs <tmp>`` must finish cleanly, so a
docstring whose reST (or Google-style section) Sphinx cannot read fails here,
and every public name (each package's ``__all__``) must get an entry. Skipped
when Sphinx is not installed (``pip install -e '.[docs]'`` brings it; the
``test`` extra does not).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "sphinx", reason="Sphinx is not installed: pip install -e '.[docs]' to build the docs"
)

DOCS = Path(__file__).resolve().parent.parent / "docs"

# page -> public module autodoc'd on it
PAGES = {
    "registry": "foundation.registry",
    "supervision": "foundation.supervision",
    "coordination": "foundation.coordination",
    "cluster": "foundation.cluster",
    "etcd": "foundation.etcd",
    "errors": "foundation.errors",
    "telemetry": "foundation.telemetry",
    "configuration": "foundation.config",
}
OTHER_PAGES = ["index", "cli", "performance", "contract"]


def _build(out: Path, env_overrides: dict[str, str | None]) -> None:
    env = dict(os.environ)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, check=False, cwd=DOCS.parent
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout[-3000:]}"
    )


@pytest.mark.parametrize(
    "env_overrides",
    [
        pytest.param({}, id="as-installed"),
        # The pure-Python twin: autodoc must not need the compiled extension.
        pytest.param(
            {"FOUNDATION_NO_EXTENSIONS": "1", "FOUNDATION_REQUIRE_EXTENSIONS": None},
            id="no-extensions",
        ),
    ],
)
def test_docs_build_without_warnings(tmp_path: Path, env_overrides: dict[str, str | None]) -> None:
    if env_overrides and os.environ.get("FOUNDATION_NO_EXTENSIONS", "").strip() == "1":
        pytest.skip("FOUNDATION_NO_EXTENSIONS=1 already: the as-installed build covers it")
    out = tmp_path / "html"
    _build(out, env_overrides)

    for page in [*PAGES, *OTHER_PAGES]:
        assert (out / f"{page}.html").is_file(), f"{page}.html was not built"

    missing = []
    for page, modname in PAGES.items():
        html = (out / f"{page}.html").read_text(encoding="utf-8")
        module = importlib.import_module(modname)
        for name in module.__all__:
            # re-exported errors are documented once, under foundation.errors
            targets = (f'id="{modname}.{name}"', f'href="errors.html#foundation.errors.{name}"')
            if not any(target in html for target in targets):
                missing.append(f"{modname}.{name} (on {page}.html)")
    assert not missing, f"public names without a docs entry: {missing}"

    # The contract the code's comments point to: layers, backends, etcd keys, targets.
    contract = (out / "contract.html").read_text(encoding="utf-8")
    for section in (
        "layers",
        "backend-contract-summary",
        "etcd-layout",
        "performance-targets",
        "read-path-facts",
    ):
        assert f'id="{section}"' in contract, f"{section} is not on contract.html"
    assert 'id="backend-contract"' in (out / "registry.html").read_text(encoding="utf-8")

    config = (out / "configuration.html").read_text(encoding="utf-8")
    for var in (
        "FOUNDATION_BACKEND",
        "FOUNDATION_ETCD_ENDPOINTS",
        "FOUNDATION_NO_EXTENSIONS",
        "FOUNDATION_REQUIRE_EXTENSIONS",
    ):
        assert f'id="envvar-{var}"' in config, f"{var} is not on configuration.html"
