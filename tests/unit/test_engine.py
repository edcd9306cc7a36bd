"""Speed engines (speed/engine.py) keep the pipeline's call path working."""
import torch


def test_a_compiled_denoiser_samples_like_the_plain_one(tmp_path):
    """torch.compile's wrapper forwards len() to the network (a DiT/U-ViT has none: TypeError), so
    the pipeline must never test a network's truthiness (`module or self.dit` broke the compile
    engine for every model). The eager backend keeps this fast; inductor wraps the same way."""
    import blinkgen
    from blinkgen.families.diffusion.folder import tiny
    from blinkgen.pipeline import Request

    torch.set_num_threads(1)
    pipe = blinkgen.load(str(tiny(tmp_path / "m")))
    s = pipe.settings(steps=2)
    plain = pipe.sample([Request("a red circle", 3)], s).images[0]
    pipe.dit = torch.compile(pipe.dit, backend="eager", dynamic=False)
    compiled = pipe.sample([Request("a red circle", 3)], s).images[0]
    assert compiled.tobytes() == plain.tobytes()
