"""The package's shape: layers import only downwards, no import loops, no hidden imports, small files."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_cadstn"
# bottom to top; a module may import its own layer and those below it, never one above
LAYERS = (("errors", "fileio", "config", "camera"), ("data",), ("models",), ("tracking",), ("training",),
          ("export",), ("presets",), ("demo", "commands", "cli"))
# imported inside functions on purpose: extras that a base install lacks, and plotting
OPTIONAL = {"ai_edge_litert", "onnxruntime", "tf2onnx", "onnx", "pyrealsense2", "libusb_package", "openni",
            "matplotlib", "tensorflow_serving", "tensorrt"}
# the CLI loads TensorFlow, then its commands, only after it has silenced TensorFlow's start-up
DEFERRED = {("keras_cadstn.cli", "keras_cadstn.commands"), ("keras_cadstn.cli", "tensorflow")}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if first in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def imports(path: pathlib.Path, known: dict) -> list:
    """(imported module, line, inside a function) for every import of the package or a third party."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                base = child.module
                subs = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in known]
                out.extend((m, child.lineno, in_function) for m in (subs or [base]))
            visit(child, inner)

    visit(tree, False)
    return out


def package_edges() -> dict:
    known = modules()
    edges = {}
    for name, path in known.items():
        if name == "keras_cadstn":
            continue  # the public facade: names loaded lazily from every layer
        edges[name] = [(m, line, inner) for m, line, inner in imports(path, known)
                       if m.startswith("keras_cadstn.") and m in known]
    return edges


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    upward = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)}) at line {line}"
              for src, deps in package_edges().items() for dst, line, _ in deps if layer(dst) > layer(src)]
    assert not upward, "\n".join(upward)


def test_no_import_loops():
    graph = {src: {dst for dst, _, _ in deps} for src, deps in package_edges().items()}
    loops, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not loops, "\n".join(loops)


def test_imports_inside_functions_are_only_optional_extras():
    known = modules()
    hidden = [f"{name}:{line} imports {m} inside a function"
              for name, path in known.items() for m, line, inner in imports(path, known)
              if inner and m.split(".")[0] not in OPTIONAL and (name, m) not in DEFERRED]
    assert not hidden, "\n".join(hidden)


def test_files_and_functions_stay_small():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


@pytest.mark.parametrize("src,dst,expected", [("keras_cadstn.data.nyu", "keras_cadstn.models.layers", 1),
                                              ("keras_cadstn.export.tflite", "keras_cadstn.data.png", 0)])
def test_the_layer_check_sees_an_upward_import(src, dst, expected):
    assert (layer(dst) > layer(src)) == bool(expected)  # the rule itself, on a pair that would break it


def test_the_public_names_are_listed_once_for_run_time_and_type_checkers_and_all_load():
    import subprocess
    import sys

    import keras_cadstn
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
    for_checkers = {a.name: node.module for node in guarded.body for a in node.names}
    assert for_checkers == keras_cadstn._WHERE
    for name in keras_cadstn.__all__:
        assert getattr(keras_cadstn, name) is not None, name
    # and `import keras_cadstn` alone loads neither TensorFlow nor Keras
    out = subprocess.run([sys.executable, "-c", "import sys, keras_cadstn; "
                          "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
