"""The Slicer extension's files, checked without Slicer.

What a Slicer build would only reveal late (or never): a file missing from a module's CMakeLists is
not installed, a CMakeLists entry without its file breaks the build, a widget name the Python code
uses but the .ui lacks fails only when a user opens the panel, and a `slicer`/`qt` import inside the
core breaks the command line and the training. Also: train.py runs a tiny training as a script.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import py_compile
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from conftest import REPO, load_module_file

ROOT = REPO
SEGMENTATION_MODULE = ROOT / "LVTSegmentation"
TRAINING_MODULE = ROOT / "LVTTraining"
TRAIN_SCRIPT = TRAINING_MODULE / "LVTTrainingScripts" / "train.py"
CORE = SEGMENTATION_MODULE / "lvt"
MODELS = ROOT / "Resources" / "Models"
UI_FILE = SEGMENTATION_MODULE / "Resources" / "UI" / "LVTSegmentation.ui"
INSTALLABLE_SUFFIXES = {".py", ".ui", ".png", ".yaml", ".yml", ".json", ".csv", ".txt", ".safetensors"}
# Folders of a module that are deliberately not installed, with the reason.
NOT_INSTALLED = {
    # Training recipes (the bundled model's among them): their data paths are source-tree paths.
    TRAINING_MODULE / "configs",
}
# The core must run without Slicer: none of these may be imported by it, directly or indirectly.
FORBIDDEN_ROOTS = {"slicer", "slicer_core", "qt", "ctk", "PythonQt", "MRMLCore", "MRMLLogic", "LVTSegmentationLib"}


def _cmake_text(path: Path) -> str:
    return re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))


def _cmake_variables(text: str) -> dict[str, list[str]]:
    """``set(NAME items...)`` blocks with ``${VAR}`` references expanded (enough for these files)."""
    raw = {m.group(1): m.group(2).split() for m in re.finditer(r"\bset\(\s*(\w+)\s+([^)]*)\)", text)}

    def expand(items: list[str], depth: int = 0) -> list[str]:
        result: list[str] = []
        for item in items:
            whole = re.fullmatch(r"\$\{(\w+)\}", item)
            if whole and whole.group(1) in raw and depth < 10:
                result += expand(raw[whole.group(1)], depth + 1)
            else:
                result.append(re.sub(r"\$\{(\w+)\}", lambda m: " ".join(raw.get(m.group(1), [m.group(0)])), item))
        return result

    return {name: expand(items) for name, items in raw.items()}


def _installable_files(folder: Path) -> set[Path]:
    return {
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix in INSTALLABLE_SUFFIXES
        and "__pycache__" not in path.parts
        and not any(part.endswith(".egg-info") for part in path.parts)
        and path.name != "CMakeLists.txt"
        and not path.name.startswith(".")
        and not any(path.is_relative_to(folder) for folder in NOT_INSTALLED)
    }


def _listed(module_dir: Path, variables: dict[str, list[str]], *names: str) -> list[Path]:
    return [(module_dir / item).resolve() for name in names for item in variables.get(name, [])]


def _configured_sources(module_dir: Path, text: str) -> list[Path]:
    """Source files copied by ``configure_file(${CMAKE_CURRENT_SOURCE_DIR}/<path> ...)``."""
    return [
        (module_dir / source).resolve()
        for source in re.findall(r"configure_file\(\s*\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)", text)
        if "${" not in source
    ]


# --- CMakeLists ----------------------------------------------------------------------------------


def test_top_level_cmakelists_declares_the_extension():
    text = _cmake_text(ROOT / "CMakeLists.txt")
    variables = _cmake_variables(text)
    assert "find_package(Slicer REQUIRED)" in text
    assert "include(${Slicer_USE_FILE})" in text
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text and "include(${Slicer_EXTENSION_CPACK})" in text
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert variables.get(f"EXTENSION_{key}"), f"EXTENSION_{key} is not set"
    assert variables["EXTENSION_CATEGORY"] == ['"Segmentation"']
    assert variables["EXTENSION_DEPENDS"] == ['"PyTorch"']
    assert variables["EXTENSION_ICONURL"][0].strip('"').endswith("/Resources/Icons/LVTSegmentation.png")
    modules = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert modules == ["LVTSegmentation", "LVTTraining"]
    assert all((ROOT / module / "CMakeLists.txt").is_file() for module in modules)


@pytest.mark.parametrize("module_dir", [SEGMENTATION_MODULE, TRAINING_MODULE], ids=lambda p: p.name)
def test_module_builds_with_generic_tests_and_registers_its_unit_test(module_dir):
    text = _cmake_text(module_dir / "CMakeLists.txt")
    assert _cmake_variables(text)["MODULE_NAME"] == [module_dir.name]
    build = re.search(r"slicerMacroBuildScriptedModule\(([^)]*)\)", text)
    assert build and "WITH_GENERIC_TESTS" in build.group(1)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


@pytest.mark.parametrize("module_dir", [SEGMENTATION_MODULE, TRAINING_MODULE], ids=lambda p: p.name)
def test_module_cmakelists_lists_every_file_to_install_and_nothing_else(module_dir):
    text = _cmake_text(module_dir / "CMakeLists.txt")
    variables = _cmake_variables(text)
    scripts = _listed(module_dir, variables, "MODULE_PYTHON_SCRIPTS")
    resources = _listed(module_dir, variables, "MODULE_PYTHON_RESOURCES")
    configured = _configured_sources(module_dir, text)
    listed = scripts + resources + configured

    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert [p for p in listed if not p.is_file()] == [], "listed but missing"
    assert all(p.suffix == ".py" for p in scripts), "SCRIPTS must be Python files"
    assert not any(p.suffix == ".py" for p in resources), "Python files belong in SCRIPTS (they get compiled)"
    expected = {p.resolve() for p in _installable_files(module_dir)}
    assert sorted(expected - set(listed)) == [], "files of the module folder that would not be installed"


def test_every_bundled_model_file_is_installed_with_the_segmentation_module():
    variables = _cmake_variables(_cmake_text(SEGMENTATION_MODULE / "CMakeLists.txt"))
    listed = set(variables["LVT_MODEL_FILES"])
    present = {path.name for path in MODELS.iterdir() if path.is_file() and not path.name.startswith(".")}
    assert listed == present
    assert {"lvt_default.json", "lvt_default.safetensors"} <= listed


def test_core_is_installed_whole():
    variables = _cmake_variables(_cmake_text(SEGMENTATION_MODULE / "CMakeLists.txt"))
    scripts = set(_listed(SEGMENTATION_MODULE, variables, "LVT_CORE_SCRIPTS"))
    resources = set(_listed(SEGMENTATION_MODULE, variables, "LVT_CORE_RESOURCES"))
    assert scripts == {p.resolve() for p in CORE.rglob("*.py") if "__pycache__" not in p.parts}
    assert resources == {p.resolve() for p in (CORE / "train" / "data" / "dataset_specs").glob("*.yaml")}
    assert CORE / "__main__.py" in {p for p in CORE.glob("*.py")}, "PythonSlicer -m lvt needs lvt/__main__.py"


# A stand-in for Slicer's CMake: the two macros copy what they are given where the real ones do
# (ctkMacroCompilePythonScript: <build>/<Slicer_QTSCRIPTEDMODULES_LIB_DIR>/<relative path>), so a configure
# shows the tree that `make package` would install.
_SLICER_STAND_IN = {
    "SlicerConfig.cmake": """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_REQUIRED_PYTHON_VERSION "3.12.10")
""",
    "empty.cmake": "",
    "UseSlicer.cmake": """
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(BUILD_TESTING ON)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS OR NOT MY_SLICER_WITH_GENERIC_TESTS)
    message(FATAL_ERROR "unexpected arguments: ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  foreach(value ${MY_SLICER_SCRIPTS} ${MY_SLICER_RESOURCES})
    configure_file(${CMAKE_CURRENT_SOURCE_DIR}/${value}
      ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${value} COPYONLY)
  endforeach()
endmacro()
macro(slicer_add_python_unittest)
endmacro()
""",
}


def _configure(tmp_path: Path, slicer_settings: str = "") -> subprocess.CompletedProcess:
    """Configure a copy of the extension against the stand-in Slicer (``slicer_settings`` replace its Python one)."""
    source, stand_in, build = tmp_path / "source", tmp_path / "slicer", tmp_path / "build"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")
    for folder in ("LVTSegmentation", "LVTTraining", "Resources"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    shutil.copy(ROOT / "CMakeLists.txt", source)
    stand_in.mkdir()
    for name, text in _SLICER_STAND_IN.items():
        if slicer_settings and name == "SlicerConfig.cmake":
            text = re.sub(r"set\(Slicer_REQUIRED_PYTHON_VERSION[^)]*\)", slicer_settings, text)
        (stand_in / name).write_text(text, encoding="utf-8")
    return subprocess.run(
        ["cmake", "-S", str(source), "-B", str(build), f"-DSlicer_DIR={stand_in}"],
        capture_output=True, text=True, timeout=120,
    )


needs_cmake = pytest.mark.skipif(
    not (shutil.which("cmake") and shutil.which("c++")), reason="needs cmake and a C++ compiler"
)


@needs_cmake
def test_cmake_configures_and_lays_out_the_installed_tree(tmp_path):
    build = tmp_path / "build"

    result = _configure(tmp_path)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tree = build / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    # Slicer loads every .py file at the top of this folder as a module: only the modules may be there.
    assert sorted(p.name for p in tree.glob("*.py")) == ["LVTSegmentation.py", "LVTTraining.py"]
    assert (tree / "lvt" / "__main__.py").is_file()
    assert (tree / "lvt" / "train" / "data" / "dataset_specs" / "phantom.yaml").is_file()
    assert (tree / "Resources" / "Models" / "lvt_default.json").is_file()
    assert (tree / "Resources" / "UI" / "LVTSegmentation.ui").is_file()
    assert _train_module().find_core_dir(tree / "LVTTrainingScripts") == tree
    assert (tree / "LVTTrainingScripts" / "train.py").read_bytes() == TRAIN_SCRIPT.read_bytes()


@needs_cmake
@pytest.mark.parametrize("slicer_settings", [
    'set(Slicer_REQUIRED_PYTHON_VERSION "3.9.10")',  # Slicer 5.8 and older
    'set(Slicer_VERSION "5.8.1")',  # a SlicerConfig that does not name its Python
], ids=["python-3.9", "slicer-5.8"])
def test_cmake_refuses_a_slicer_older_than_5_10(tmp_path, slicer_settings):
    result = _configure(tmp_path, slicer_settings)

    assert result.returncode != 0
    assert "LVT Segmentation needs 3D Slicer 5.10 or later" in result.stderr


# --- the .ui file --------------------------------------------------------------------------------


def _ui_widgets() -> dict[str, str]:
    root = ElementTree.parse(UI_FILE).getroot()
    names = [(w.get("name"), w.get("class")) for w in root.iter("widget")]
    assert len({n for n, _ in names}) == len(names), "widget names must be unique"
    return dict(names)


def test_ui_file_is_qt_designer_xml_with_a_qmrmlwidget_root():
    root = ElementTree.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == root.findtext("class") == "LVTSegmentation"
    widgets = _ui_widgets()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {cls for cls in widgets.values() if not cls.startswith("Q")}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in widgets and connection.findtext("receiver") in widgets
    mrml_widgets = {name for name, cls in widgets.items() if cls in {"qMRMLNodeComboBox", "qMRMLTableView"}}
    connections = list(root.iter("connection"))
    receivers = {c.findtext("receiver") for c in connections if c.findtext("slot").startswith("setMRMLScene")}
    assert mrml_widgets <= receivers, "every MRML widget must receive the scene"


def test_every_ui_name_the_module_uses_exists_in_the_ui_file():
    source = (SEGMENTATION_MODULE / "LVTSegmentation.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the module uses no widgets?"
    assert sorted(used - set(_ui_widgets())) == []


def _parameter_fields() -> set[str]:
    tree = ast.parse((SEGMENTATION_MODULE / "LVTSegmentation.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LVTSegmentationParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)
    return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}


def test_ui_parameter_names_match_the_parameter_node():
    root = ElementTree.parse(UI_FILE).getroot()
    bound = {
        prop.findtext("string")
        for widget in root.iter("widget")
        for prop in widget.findall("property")
        if prop.get("name") == "SlicerParameterName"
    }
    assert bound == _parameter_fields()


# --- Python files -----------------------------------------------------------------------------------


MODULE_PY_FILES = sorted(
    [
        SEGMENTATION_MODULE / "LVTSegmentation.py",
        TRAINING_MODULE / "LVTTraining.py",
        TRAIN_SCRIPT,
        *(SEGMENTATION_MODULE / "LVTSegmentationLib").glob("*.py"),
    ]
)


@pytest.mark.parametrize("path", MODULE_PY_FILES, ids=lambda p: p.name)
def test_module_files_compile(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "compiled.pyc"), doraise=True)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _forbidden(name: str) -> bool:
    root = name.split(".")[0]
    return root in FORBIDDEN_ROOTS or root.startswith(("vtkMRML", "vtkSlicer", "qMRML", "qSlicer"))


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_source_imports_nothing_from_slicer_or_qt(path):
    assert sorted(name for name in _imported_modules(path) if _forbidden(name)) == []


def test_importing_every_core_module_loads_no_slicer_or_qt():
    code = (
        "import importlib, pkgutil, sys, lvt\n"
        "for info in pkgutil.walk_packages(lvt.__path__, 'lvt.'):\n"
        "    if info.name != 'lvt.__main__':\n"
        "        importlib.import_module(info.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=SEGMENTATION_MODULE, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "lvt.cli.main" in loaded and "lvt.measure.report" in loaded
    assert sorted(name for name in loaded if _forbidden(name)) == []


def test_logic_package_is_qt_free_and_takes_only_mrml_classes_from_slicer():
    for path in (SEGMENTATION_MODULE / "LVTSegmentationLib").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
                assert not roots & {"qt", "ctk", "slicer"}, f"{path.name}: import {roots}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] not in ("qt", "ctk"), f"{path.name}: from {node.module}"
                if node.module.split(".")[0] == "slicer":
                    assert node.module == "slicer", f"{path.name}: from {node.module} (slicer.util needs the app)"
                    assert all(a.name.startswith("vtk") for a in node.names), f"{path.name}: not an MRML class"


def test_core_requirements_cover_the_core_dependencies():
    """Every dependency of the core is either installed on first use or provided by Slicer/PyTorch."""
    path = SEGMENTATION_MODULE / "LVTSegmentationLib" / "environment.py"
    environment = load_module_file(path, "lvt_environment")
    dependencies = [d for d in importlib.metadata.requires("lvt-segmentation") if "extra ==" not in d]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in dependencies}
    installed = {re.split(r"[<>=!~\[ ;]", r.pip_spec, maxsplit=1)[0].lower() for r in environment.CORE_REQUIREMENTS}
    provided = {name.lower() for name in environment.SLICER_OWNED_DISTRIBUTIONS} | {"torch"}
    optional = {name.lower() for name in environment.NOT_INSTALLED_IN_SLICER}
    assert sorted(names - installed - provided - optional) == []
    assert not installed & provided, "never pip-install Slicer's own packages or torch"


# --- icons and the Extensions Index description ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [ROOT / "Resources" / "Icons", SEGMENTATION_MODULE / "Resources" / "Icons"],
    ids=["extension", "module"],
)
def test_icons_are_128_pixel_pngs(path):
    header = (path / "LVTSegmentation.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (128, 128)


def test_s4ext_matches_the_cmake_metadata():
    fields = {}
    for line in (ROOT / "LVTSegmentation.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    required = "scm scmurl scmrevision depends build_subdirectory homepage contributors category iconurl status"
    for key in [*required.split(), "description", "screenshoturls", "enabled"]:
        assert fields.get(key), f"{key} missing from LVTSegmentation.s4ext"
    variables = _cmake_variables(_cmake_text(ROOT / "CMakeLists.txt"))
    assert fields["homepage"] == variables["EXTENSION_HOMEPAGE"][0].strip('"')
    assert fields["iconurl"] == variables["EXTENSION_ICONURL"][0].strip('"')
    assert fields["category"] == "Segmentation" and fields["depends"] == "PyTorch"
    assert fields["scmurl"].startswith(fields["homepage"])


# --- train.py -------------------------------------------------------------------------------------


def _train_module():
    return load_module_file(TRAIN_SCRIPT, "lvt_train_script")


def test_train_script_finds_the_core_in_the_source_tree_and_in_an_installed_extension(tmp_path):
    train = _train_module()
    assert train.find_core_dir(TRAIN_SCRIPT.parent) == SEGMENTATION_MODULE
    installed = tmp_path / "qt-scripted-modules"
    (installed / "lvt").mkdir(parents=True)
    (installed / "lvt" / "__init__.py").write_text("", encoding="utf-8")
    (installed / "LVTTrainingScripts").mkdir()
    assert train.find_core_dir(installed / "LVTTrainingScripts") == installed
    assert train.find_core_dir(tmp_path) is None
    assert train.script_arguments(["train.py", "--", "c.yaml", "--steps", "2"]) == ["c.yaml", "--steps", "2"]
    assert train.script_arguments(["train.py", "c.yaml"]) == ["c.yaml"]


def test_train_script_runs_a_tiny_training_and_exits_with_its_status(tmp_path):
    config = TRAINING_MODULE / "Resources" / "Testing" / "tiny_phantom.yaml"
    options = ["--output", str(tmp_path / "run"), "--device", "cpu", "--progress", "json", "--threads", "2"]
    command = [sys.executable, str(TRAIN_SCRIPT), "--", str(config), *options]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-2000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done == {"event": "done", "output": str(tmp_path / "run" / "final.json")}
    assert json.loads((tmp_path / "run" / "final.json").read_text(encoding="utf-8"))["name"] == "lvt_tiny_test"

    command = [sys.executable, str(TRAIN_SCRIPT), str(tmp_path / "none.yaml")]
    missing = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "none.yaml" in missing.stderr


def _failing_entry(error: BaseException):
    def entry(arguments: list[str]) -> int:
        raise error

    return lambda: entry


@pytest.mark.parametrize(("error", "status", "said"), [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "CUDA out of memory"),
    (OSError(28, "No space left on device"), 1, "No space left on device"),
    (ModuleNotFoundError("No module named 'yaml'", name="yaml"), 1, "'yaml'"),
    (KeyboardInterrupt(), 130, "cancelled"),
    (SystemExit(2), 2, ""),
])
def test_train_script_turns_every_failure_into_an_exit_status(error, status, said, capsys):
    train = _train_module()
    assert train.run(["train.py", "c.yaml"], entry=_failing_entry(error)) == status
    assert said in capsys.readouterr().err


def test_train_script_passes_the_arguments_and_the_status_through():
    seen: list[list[str]] = []
    train = _train_module()
    assert train.run(["train.py", "--", "c.yaml", "--steps", "3"], entry=lambda: lambda a: seen.append(a) or 0) == 0
    assert seen == [["c.yaml", "--steps", "3"]]


def test_no_script_lies_at_the_top_of_a_module_folder():
    """Slicer loads every .py at the top of a module folder as a module; only the module file may be there."""
    for module_dir in (SEGMENTATION_MODULE, TRAINING_MODULE):
        assert sorted(p.name for p in module_dir.glob("*.py")) == [f"{module_dir.name}.py"]
