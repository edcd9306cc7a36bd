"""`generate --size` below the model's own size is refused in words that say what --size takes
(regression: --size 32 or 0 on a 64-px model said it 'needs an upscaler for that')."""
import json

from conftest import make_tiny, run_cli


def test_size_below_the_model_says_what_size_takes(tmp_path):
    model = make_tiny("diffusion", tmp_path / "m")
    native = json.loads((model / "config.json").read_text())["image_size"]
    r = run_cli("generate", "red heart", "--model", model, "--steps", 1, "--size", native // 2,
                "-o", tmp_path / "x.png", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"this model draws {native}-px images; --size takes {native}" in r.stderr
    assert not (tmp_path / "x.png").exists()
