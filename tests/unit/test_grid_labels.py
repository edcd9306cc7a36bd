"""Grid row/column labels of a model axis name the model a reader can tell apart."""
from blinkgen.grid import _model_label


def test_model_labels_tell_run_exports_apart(tmp_path):
    # two runs' exported folders are both called "model": the label is the run's name
    assert _model_label(str(tmp_path / "runs" / "gan-S" / "model")) == "gan-S"
    assert _model_label(str(tmp_path / "runs" / "vae-S" / "model")) == "vae-S"
    assert _model_label("default") == "default"
    ck = tmp_path / "runs" / "mine" / "checkpoints" / "step-00004000"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text("{}")
    assert _model_label(str(ck)) == "mine@step-00004000"
