"""PULSE used from another project's code: vendored as a git submodule, or with its folder on sys.path
beside modules of the user's that have the name of one of PULSE's."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

GIT = shutil.which("git")
USE_TINY_MODEL = """
model = PULSE.load(cache_dir={model!r}, precision="fp64")
(result,) = model.upsample({input!r}, seed=0, steps=1)
print(result.steps, result.image.size)
"""


def python_in(folder, code):
    """`code` run by Python in `folder` as a notebook or script there would run it (no PYTHONPATH)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=300)


def git(folder, *arguments):
    subprocess.run([GIT, "-c", "user.name=test", "-c", "user.email=test@example.com",
                    "-c", "protocol.file.allow=always", *arguments], cwd=folder, check=True, capture_output=True)


def repository_of_this_checkout(folder):
    """A git repository at `folder` holding this checkout's files as they are now (tracked files and new
    ones git does not ignore), committed: what a submodule of the project would check out."""
    listed = subprocess.run([GIT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():  # not a tracked file deleted in the work tree
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "PULSE")


@pytest.mark.skipif(GIT is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout")
def test_pulse_vendored_as_a_git_submodule_imports_as_the_projects_module_and_names_a_clash(tmp_path):
    repository_of_this_checkout(tmp_path / "pulse")
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    git(project, "submodule", "add", "-q", str(tmp_path / "pulse"), "gitmodules/pulse")
    vendored = project / "gitmodules" / "pulse"
    fixtures = vendored / "tests" / "fixtures"
    works = python_in(project, """
from gitmodules.pulse.PULSE import PULSE as Model
from gitmodules.pulse import PULSE
import gitmodules.pulse.PULSE
import settings  # PULSE's own modules by their plain names, as the README says
assert gitmodules.pulse.PULSE is PULSE and PULSE.PULSE is Model and settings.SearchConfig is PULSE.SearchConfig
""" + USE_TINY_MODEL.format(model=str(fixtures / "tiny_model"), input=str(fixtures / "tiny_input" / "target.png")))
    assert works.returncode == 0, works.stderr
    assert works.stdout == "1 (256, 256)\n"

    (project / "loss.py").write_text("def my_loss():\n    return 0\n")  # the project's own, first on sys.path
    clash = python_in(project, "from gitmodules.pulse import PULSE")
    assert clash.returncode == 1
    assert clash.stderr.splitlines()[-1] == (
        f"ImportError: {project / 'loss.py'} stands where PULSE needs its own loss.py ({vendored / 'loss.py'}): "
        f"Python allows one module named 'loss'. Rename yours, or put {vendored} first on sys.path and leave "
        f"yours out of this session")


def test_a_users_module_that_pulse_would_hide_is_named_when_pulse_is_first_on_sys_path(tmp_path):
    (tmp_path / "device.py").write_text("def my_device():\n    return 'mine'\n")
    (tmp_path / "generators").mkdir()  # a folder of pictures, no module: nothing hidden
    hidden = python_in(tmp_path, f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport PULSE\n")
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stderr.splitlines() == [  # warned at the line of the import
        f"<string>:3: UserWarning: PULSE's {ROOT / 'device.py'} hides {tmp_path / 'device.py'}: Python allows one module "
        f"named 'device', so `import device` gives PULSE's in this session. Rename yours to use it beside PULSE"]
    (tmp_path / "device.py").rename(tmp_path / "my_device.py")
    alone = python_in(tmp_path, f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport PULSE\n")
    assert alone.returncode == 0 and alone.stderr == ""
