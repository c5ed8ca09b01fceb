"""Build levent's extension modules against the system libevent, found with pkg-config.

Every extension links the shared libevent libraries, never a static copy: libevent keeps process-wide
state (the threading callbacks, the log callback, signal handling), so all modules must share one.
"""
import glob
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
# libevent_openssl.pc does not pull in openssl, so it is named too.
PKG_CONFIG_PACKAGES = ["libevent_core", "libevent_extra", "libevent_openssl", "libevent_pthreads", "openssl"]
MISSING_HELP = """
levent needs the libevent 2.1+ and OpenSSL 3 development files, found with pkg-config ({why}).
Install them, then build again:
  Debian/Ubuntu:  sudo apt-get install libevent-dev libssl-dev pkg-config
  macOS:          brew install libevent openssl pkg-config
If they are installed where pkg-config does not look, set PKG_CONFIG_PATH to the folders holding
libevent_core.pc and openssl.pc, for example on macOS:
  export PKG_CONFIG_PATH="$(brew --prefix openssl)/lib/pkgconfig:$(brew --prefix libevent)/lib/pkgconfig"
"""

# Every src/levent/*.pyx is an extension module levent.<name>.
MODULES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "src", "levent", "*.pyx")))


PKG_CONFIG = os.environ.get("PKG_CONFIG", "pkg-config")
# A source build against libevent in a folder the loader does not search (pkg-config's -L) records that
# folder as the modules' RPATH, so that they load without LD_LIBRARY_PATH. Wheel builds set
# LEVENT_RPATH=0: auditwheel rewrites the RPATH only of the modules that link a library it grafts, and
# the others would keep the build machine's folder (/usr/local/lib in cibuildwheel's images).
RPATH = os.environ.get("LEVENT_RPATH", "1") != "0" and sys.platform != "darwin"


def pkg_config(*args):
    cmd = [PKG_CONFIG, *args, *PKG_CONFIG_PACKAGES]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(MISSING_HELP.format(why="pkg-config itself was not found"))
    except subprocess.CalledProcessError as exc:
        why = (exc.stderr.strip() or "pkg-config failed").splitlines()[0]
        raise SystemExit(MISSING_HELP.format(why=why))
    return shlex.split(out.stdout)


class BuildExtWithLibevent(build_ext):
    """Asks pkg-config for flags only when compiling, so that an sdist builds without libevent."""

    def build_extensions(self):
        pkg_config("--atleast-version=2.1")
        # levent's TLS uses OpenSSL 3 API; an older one (manylinux_2_28's 1.1.1) would fail to compile.
        if subprocess.run([PKG_CONFIG, "--atleast-version=3.0", "openssl"]).returncode != 0:
            found = subprocess.run([PKG_CONFIG, "--modversion", "openssl"], capture_output=True, text=True)
            raise SystemExit(MISSING_HELP.format(why=f"levent needs OpenSSL 3.0+; pkg-config found {found.stdout.strip()}"))
        cflags = pkg_config("--cflags")
        # libevent_openssl.pc and libevent_pthreads.pc pull in -levent, the all-in-one libevent, which
        # holds a second copy of libevent_core's code and globals: linked with libevent_core (where the
        # linker does not drop unused libraries), a process would run two libevents. core + extra +
        # openssl + pthreads are the whole of it.
        libs = [f for f in pkg_config("--libs") if f != "-levent"]
        if sys.platform.startswith("linux"):
            libs.append("-ldl")  # dladdr (python -m levent info) is in libdl before glibc 2.34
        for ext in self.extensions:
            ext.include_dirs += [f[2:] for f in cflags if f.startswith("-I")]
            ext.extra_compile_args += [f for f in cflags if not f.startswith("-I")]
            ext.library_dirs += [f[2:] for f in libs if f.startswith("-L")]
            ext.libraries += [f[2:] for f in libs if f.startswith("-l")]
            ext.extra_link_args += [f for f in libs if not f.startswith(("-L", "-l"))]
            if RPATH:
                ext.runtime_library_dirs += [f[2:] for f in libs if f.startswith("-L")]
        super().build_extensions()


class BuildPyWithBenchSources(build_py):
    """Ships benchmarks/c/*.c and *.h (where they live, next to the other benchmark notes) as package
    data of levent.bench, which compiles them at run time: `python -m levent bench` works from a wheel."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "levent", "bench", "c")
        self.mkpath(target)
        for src in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "c", "*.[ch]"))):
            self.copy_file(src, os.path.join(target, os.path.basename(src)))


def extensions():
    from Cython.Build import cythonize

    exts = [Extension(f"levent.{name}", [f"src/levent/{name}.pyx"]) for name in MODULES]
    return cythonize(
        exts,
        include_path=[ROOT, os.path.join(ROOT, "src")],
        compiler_directives={
            "language_level": "3",
            "embedsignature": True,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithLibevent, "build_py": BuildPyWithBenchSources})
