"""The serve tests' shared tiny model lives in a temporary folder; it must go when the test process
ends, or every suite run leaves one more folder in /tmp (33 had piled up on the dev machine)."""
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_tiny_generator_folder_is_removed_at_exit():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from conftest_serve import tiny_generator\n"
            "g = tiny_generator(); print(g.folder if hasattr(g, 'folder') else '')\n"
            "import tempfile, glob, os\n"
            "print(max(glob.glob(os.path.join(tempfile.gettempdir(), 'blinkgen-serve-test-*')), key=os.path.getmtime))\n"
            % str(TESTS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    made = Path(out.stdout.strip().splitlines()[-1])
    assert made.name.startswith("blinkgen-serve-test-")
    assert not made.exists(), f"{made} left behind"
