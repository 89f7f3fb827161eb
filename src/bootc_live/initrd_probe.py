"""What would fail at boot: run by `bootc-live build` inside its unpacked initramfs (chrooted).

Runs with the initramfs's own python3, so it uses only what the runtime itself imports (the
initramfs holds just that part of the standard library) and runs on Python 3.9. It imports no
more than it must, so that a broken standard library is a finding, not a crash. It prints a
line `module NAME` for each of our dracut modules included and
`problem KIND<TAB>WHAT<TAB>NEEDED_BY` for each problem: KIND `library` (WHAT its soname),
`command`, `tool` (a command that does not run) or `python`. The host turns them into one line.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Literal

RUNTIME = "/usr/lib/bootc-live"
MODULES_TXT = "/usr/lib/dracut/modules.txt"
# Commands each of our dracut modules needs at boot, and what it is for.
COMMANDS = {
    "bootc-live": (("mount", "the live root"), ("umount", "the live root")),
    "bootc-live-net": (("curl", "ftp, tftp and nfs URLs (url-lib)"),),
    "bootc-live-zram": (("mkfs.ext4", "bootc.zram"), ("modprobe", "bootc.zram")),
    "bootc-live-erofs": (("mkfs.erofs", "bootc.live.erofs"), ("modprobe", "bootc.live.erofs")),
    "bootc-live-kexec": (("kexec", "bootc.kexec"),),
}
PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
POLICY = "/etc/containers/policy.json"  # what bootc-live build --policy puts in
# The tool that verifies each kind of signature a policy requirement names, and how it is run.
VERIFIERS = {"signedBy": ("gpgv", "--version"), "sigstoreSigned": ("openssl", "version")}
ET_EXEC, ET_DYN, PT_INTERP, PT_DYNAMIC = 2, 3, 3, 2


def included() -> list[str]:
    """Our dracut modules in this initramfs (dracut lists what it included)."""
    try:
        with open(MODULES_TXT) as f:
            names = f.read().split()
    except OSError:
        return []
    return [name for name in names if name.startswith("bootc-live")]


def runtime_problems(modules: list[str]) -> list[list[str]]:
    """Import the runtime as the boot does, and TLS where a network module is in."""
    sys.path.insert(0, RUNTIME)
    problems = []
    try:
        for name in sorted(os.listdir(os.path.join(RUNTIME, "bootc_live", "runtime"))):
            if name.endswith(".py"):
                importlib.import_module(f"bootc_live.runtime.{name[:-3]}")
    except Exception as err:  # any failure to import is the finding
        problems.append(
            ["python", f"the runtime does not import ({type(err).__name__}: {err})", "boot"]
        )
    if "bootc-live-net" in modules:
        try:
            import ssl

            ssl.create_default_context()
        except Exception as err:  # e.g. ImportError: libssl.so.3: cannot open shared object
            problems.append(["python", f"python's ssl module does not load ({err})", "https"])
    return problems


def command_problems(modules: list[str]) -> list[list[str]]:
    problems = []
    for module in modules:
        for command, purpose in COMMANDS.get(module, ()):
            if not any(os.path.exists(os.path.join(d, command)) for d in PATH):
                problems.append(["command", command, purpose])
    return problems


def signature_problems() -> list[list[str]]:
    """With a policy in the initramfs: each verifier its requirements need, there and running."""
    if not os.path.exists(POLICY):
        return []
    sys.path.insert(0, RUNTIME)
    try:
        from bootc_live.runtime import policy

        rules = policy.Policy.load(POLICY)
    except Exception as err:  # a policy the boot cannot read is the finding
        return [["python", f"{POLICY} cannot be read ({err})", "signatures"]]
    every = [*rules.default]
    for scopes in rules.transports.values():
        for requirements in scopes.values():
            every += requirements
    problems = []
    for kind in sorted({req.type for req in every} & set(VERIFIERS)):
        tool, version = VERIFIERS[kind]
        where = [os.path.join(d, tool) for d in PATH if os.path.exists(os.path.join(d, tool))]
        if not where:
            problems.append(["command", tool, f"{kind} in {POLICY}"])
            continue
        import subprocess  # noqa: TID251 (the probe runs alone, see library_problems)

        try:
            ran = subprocess.run(
                [where[0], version],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
            said = ran.stdout.decode(errors="replace").strip().splitlines()
            failed = ran.returncode != 0
        except OSError as err:
            said, failed = [str(err)], True
        if failed:
            problems.append(["tool", f"{tool} {version}: {said[-1] if said else 'failed'}", kind])
    return problems


def elf_header(path: str) -> tuple[int, bytes | None, bool] | None:
    """(e_type, PT_INTERP, has PT_DYNAMIC) of an ELF file, or None for any other file."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or len(head) < 52:
                return None
            wide = head[4] == 2
            order: Literal["little", "big"] = "little" if head[5] == 1 else "big"

            def num(at: int, size: int) -> int:
                return int.from_bytes(head[at : at + size], order)

            e_type = num(16, 2)
            phoff, phentsize, phnum = (
                (num(32, 8), num(54, 2), num(56, 2))
                if wide
                else (num(28, 4), num(42, 2), num(44, 2))
            )
            interp, dynamic = None, False
            for i in range(min(phnum, 64)):
                f.seek(phoff + i * phentsize)
                ph = f.read(phentsize)
                p_type = int.from_bytes(ph[0:4], order)
                if p_type == PT_DYNAMIC:
                    dynamic = True
                elif p_type == PT_INTERP:
                    offset = int.from_bytes(ph[8:16] if wide else ph[4:8], order)
                    size = int.from_bytes(ph[32:40] if wide else ph[16:20], order)
                    f.seek(offset)
                    interp = f.read(min(size, 4096)).rstrip(b"\0")
            return e_type, interp, dynamic
    except OSError:
        return None


def dynamic_elves() -> tuple[list[str], str | None]:
    """Every dynamically linked executable and Python extension module, and the loader.

    Other shared objects are traced through the executables that load them: alone, a library
    may not find its own dependencies, which its executable's RUNPATH provides (systemd's).
    """
    found, loader = [], None
    for dirpath, dirnames, filenames in os.walk("/"):
        if dirpath == "/":
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev", "run")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            header = elf_header(path)
            if header is None or header[0] not in (ET_EXEC, ET_DYN) or not header[2]:
                continue
            if not header[1] and "/python3" not in dirpath:
                continue
            found.append(path)
            if header[1] and (loader is None or path == "/usr/bin/python3"):
                loader = header[1].decode(errors="replace")
    return sorted(found), loader


def library_problems() -> list[list[str]]:
    """Each library that an ELF file of the initramfs needs and the loader cannot find."""
    files, loader = dynamic_elves()
    if loader is None:
        return []
    try:
        # It runs alone in the initramfs, without the package: no bootc_live.runtime.run.
        import subprocess  # noqa: TID251
        import threading
    except ImportError as err:  # the runtime needs both: its import fails too, and says so
        return [["python", f"python's {err.name} module is missing", "the self-check"]]
    problems: list[list[str]] = []
    pending = list(files)
    lock = threading.Lock()
    env = {"LD_TRACE_LOADED_OBJECTS": "1", "PATH": ":".join(PATH)}

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                path = pending.pop()
            try:
                traced = subprocess.run(
                    [loader, path],
                    env=env,  # stdin: the probe's own, /dev/null on the host
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=60,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                with lock:
                    problems.append(["python", f"the loader {loader} fails ({err})", path])
                continue
            for line in traced.stdout.decode(errors="replace").splitlines():
                name, _, where = line.strip().partition(" => ")
                if where.strip() == "not found":
                    with lock:
                        problems.append(["library", name, path])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(problems)


def main() -> None:
    modules = included()
    # Missing libraries first: they are what makes an import or a command fail.
    problems = library_problems() + command_problems(modules) + runtime_problems(modules)
    problems += signature_problems()
    for module in modules:
        print(f"module {module}")
    for kind, what, needed_by in problems:
        print(f"problem {kind}\t{what}\t{needed_by}".replace("\n", " "))


if __name__ == "__main__":
    main()
