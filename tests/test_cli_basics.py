import subprocess
import sys

from il2pkpd import __version__
from il2pkpd.cli import main


def test_version_flag_prints_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_exits_2():
    assert main(["no-such-command"]) == 2


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "il2pkpd", "--help"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0
    assert "Usage" in out.stdout
