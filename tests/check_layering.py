#!/usr/bin/python3
"""Checks the include order of the library's layers.

Usage: check_layering.py SOURCE_DIR LAYER [LAYER ...]

The layers are given lowest first, as CMakeLists.txt lists them in NANGUARD_MODULES; a file in
src/<layer>/ or include/nanguard/<layer>/ may include only headers of its own layer and the
layers before it, public ("nanguard/<layer>/...") or private ("<layer>/..." from src/), and
every folder of src/ and include/nanguard/ is a layer of the list. Each offending include is
printed as FILE:LINE: the include: why; the exit status is 1 if there is one.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<(nanguard/[^>]+)>)')


def layer_of_include(path, layers):
    """The layer an include names, or None when it names none (a system or generated header)."""
    parts = path.split("/")
    if parts[0] == "nanguard":
        if len(parts) == 2:  # nanguard/nanguard.h includes every layer
            return "nanguard.h"
        return parts[1] if parts[1] in layers else None
    return parts[0] if len(parts) > 1 and parts[0] in layers else None


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, layers = argv[1], argv[2:]
    rank = {layer: i for i, layer in enumerate(layers)}
    errors = []
    files = 0
    # A layer folder missing from the list would be neither built nor checked.
    for top in (os.path.join(root, "src"), os.path.join(root, "include", "nanguard")):
        for name in sorted(os.listdir(top)):
            if os.path.isdir(os.path.join(top, name)) and name not in rank:
                errors.append(f"{os.path.relpath(os.path.join(top, name), root)}/: not a layer of "
                              "NANGUARD_MODULES")
    for layer in layers:
        for top in (os.path.join(root, "src", layer), os.path.join(root, "include", "nanguard", layer)):
            for folder, _, names in os.walk(top):
                for name in sorted(names):
                    path = os.path.join(folder, name)
                    files += 1
                    with open(path, encoding="utf-8", errors="replace") as f:
                        for number, line in enumerate(f, 1):
                            m = INCLUDE.match(line)
                            if not m:
                                continue
                            included = m.group(1) or m.group(2)
                            target = layer_of_include(included, rank)
                            if target is None:
                                continue
                            if target == "nanguard.h":
                                why = "the all-in-one header includes every layer"
                            elif rank[target] > rank[layer]:
                                why = f"layer '{target}' comes after '{layer}'"
                            else:
                                continue
                            where = os.path.relpath(path, root)
                            errors.append(f"{where}:{number}: {m.group(0).strip()}: {why}")
    if files == 0:
        print(f"check_layering: no sources under {root}/src or {root}/include/nanguard", file=sys.stderr)
        return 2
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} error(s) against the layer order " + " < ".join(layers)
              + " (NANGUARD_MODULES in CMakeLists.txt)")
        return 1
    print(f"{files} files follow the layer order " + " < ".join(layers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
