"""What readelf says about the built libraries."""
import re
import subprocess


def archive_functions(path):
    """{name: [member, ...]}: the archive members of `path` (a .a) that
    define each strong global function, and readelf's CompletedProcess.

    readelf rather than nm: rustc's objects carry embedded LLVM bitcode,
    which a system-wide LLVM linker plugin may claim (and fail on) in nm."""
    r = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, timeout=120)
    defs = {}
    member = None
    for line in r.stdout.splitlines():
        m = re.match(r"^File: .*\((.*)\)$", line)
        if m:
            member = m.group(1)
            continue
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(parts) == 8 and parts[3] == "FUNC" and parts[4] == "GLOBAL" and parts[6] != "UND":
            defs.setdefault(parts[7], []).append(member)
    return defs, r
