"""The end-of-run summary is read from the workdir alone and names paths as the user typed them."""

import json

from vqjax.train.summary import run_summary


def make_run(workdir, steps_done, total=200):
    (workdir / "images").mkdir(parents=True)
    (workdir / "images" / f"reconstructions_{steps_done:08d}.png").write_bytes(b"")
    (workdir / "config.json").write_text(json.dumps({
        "trainer": "tokenizer", "total_steps": total, "model": {"name": "vit_vqgan", "size": "tiny"},
        "quantizer": {"name": "vq"}, "dataset": {"name": "vqjax_photos", "image_size": 32,
                                                 "eval_split": "validation"}}))
    rows = [{"step": 10, "loss/loss": 0.5},
            {"step": 100, "eval/psnr": 20.0, "eval/usage": 0.5, "eval/perplexity": 300.0,
             "eval/examples": 32.0},
            {"step": steps_done, "loss/loss": 0.1},
            {"step": steps_done, "eval/psnr": 23.456, "eval/usage": 0.9512,
             "eval/perplexity": 812.3, "eval/examples": 96.0}]
    (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{\"step\": 2")


def test_summary_of_a_finished_run_uses_relative_paths(tmp_path, monkeypatch):
    make_run(tmp_path / "runs" / "tok", 200)
    monkeypatch.chdir(tmp_path)
    text = run_summary("runs/tok")
    assert "runs/tok at step 200 of 200" in text
    assert "PSNR 23.46 dB" in text and "codebook usage 95.1% (perplexity 812)" in text
    assert "96 images" in text
    assert "images:      runs/tok/images/reconstructions_00000200.png" in text
    assert "tensorboard --logdir=runs/tok/tensorboard" in text
    assert "python -m launch.evaluate --workdir=runs/tok" in text
    assert "--config=configs/maskgit.py:tiny,dataset=vqjax_photos" in text
    assert "--config.tokenizer_workdir=runs/tok" in text
    assert str(tmp_path) not in text and "rerun" not in text


def test_summary_of_an_interrupted_run_says_how_to_resume(tmp_path):
    make_run(tmp_path / "tok", 120)
    text = run_summary(tmp_path / "tok")
    assert "at step 120 of 200" in text and "rerun the same command to resume" in text
    assert str(tmp_path / "tok") in text  # outside the current directory: absolute


def test_summary_with_evaluation_results(tmp_path):
    make_run(tmp_path / "tok", 200)
    text = run_summary(tmp_path / "tok", {"step": 200, "examples": 110, "split": "validation",
                                          "dataset": "vqjax_photos", "psnr": 23.0, "ssim": 0.81234,
                                          "lpips": 0.1234, "usage": 0.97, "perplexity": 900.0})
    assert "evaluation (110 images of vqjax_photos/validation): PSNR 23.00 dB  SSIM 0.812  " \
           "LPIPS 0.123  codebook usage 97.0% (perplexity 900)" in text
