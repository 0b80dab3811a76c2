"""The dependency ranges are bounded, and constraints.txt (what CI installs) lies inside them."""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import tomlkit

from tests.helpers import REPO


def _requirements() -> list[Requirement]:
    project = tomlkit.parse((REPO / "pyproject.toml").read_text()).unwrap()["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(text) for text in listed]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_runtime_and_test_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in _requirements() if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert unbounded == []


def test_constraints_pin_each_dependency_inside_its_range():
    pins = _pins()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} not in {requirement}"
