#!/usr/bin/env python3
# The layer rule of docs/architecture.md, checked on the source tree: a file of src/<layer>/ or
# include/peft/<layer>/ includes only from its own layer or a lower one; text and data use no libtorch.
import re
import sys
from pathlib import Path

# Lowest first. The command-line program (tools/) sits above all of them.
LAYERS = ["core", "text", "data", "formats", "layers", "models", "allocator", "adapters", "eval",
          "observability", "train"]
TORCH_FREE = {"text", "data"}
RANK = {name: i for i, name in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def layer_of(root, path):
    rel = path.relative_to(root).parts
    if rel[0] == "src" and len(rel) > 2:
        return rel[1]
    if rel[:2] == ("include", "peft") and len(rel) > 3:
        return rel[2]
    return None


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    problems = []
    files = [p for d in ("src", "include/peft") for p in (root / d).rglob("*") if p.suffix in (".h", ".cpp")]
    for path in sorted(files):
        rel = path.relative_to(root)
        layer = layer_of(root, path)
        if layer is None:
            if rel.as_posix() != "src/pch.h":
                problems.append(f"{rel}: not inside a layer folder (one of {', '.join(LAYERS)})")
            continue
        if layer not in RANK:
            problems.append(f"{rel}: '{layer}' is not a layer (add it to docs/architecture.md and this check)")
            continue
        public = rel.parts[0] == "include"
        for m in INCLUDE.finditer(path.read_text(encoding="utf-8")):
            bracket, name = m.groups()
            line = path.read_text(encoding="utf-8")[: m.start()].count("\n") + 1
            closing = ">" if bracket == "<" else '"'
            where = f"{rel}:{line}: #include {bracket}{name}{closing}"
            top = name.split("/")[0]
            if layer in TORCH_FREE and top in ("ATen", "torch", "c10"):
                problems.append(f"{where}: the {layer} layer does not use libtorch")
            if bracket != '"':
                continue
            if name.endswith(".inc"):
                continue  # generated in the build tree from an asset of the same layer (report_page.inc)
            parts = name.split("/")
            if parts[0] == "peft" and len(parts) == 3:
                target = parts[1]
            elif len(parts) == 2 and parts[0] in RANK:  # an internal header of src/<layer>/
                target = parts[0]
                if public:
                    problems.append(f"{where}: a public header includes an internal one (src/{name})")
            elif len(parts) == 1 and (path.parent / name).exists():
                continue  # a header beside the file, same layer
            else:
                problems.append(f"{where}: not a header of a layer (expected \"peft/<layer>/name.h\")")
                continue
            if target not in RANK:
                problems.append(f"{where}: '{target}' is not a layer")
            elif RANK[target] > RANK[layer]:
                problems.append(f"{where}: {layer} may not include from {target}, a higher layer")
    for p in problems:
        print(p)
    print(f"check_layers: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
