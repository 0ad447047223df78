"""Report generation: tokenizer, resampler + decoder, decoding, the oracle/random contrast, the
real runner with its artifacts, and the optional frozen-LM path."""

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from ctbench.datasets import Dataset, DatasetCard, TaskSpec
from ctbench.errors import CTBenchError
from ctbench.tasks import report_decoder as rd
from ctbench.tasks import text_metrics as tm
from ctbench.tasks.report_generation import ReportGenerationTask, _consensus, pool_features
from ctbench.types import Features

SPEC = TaskSpec(name="report-generation", category="report-generation", targets=("report",),
                main_metric="finding_f1")
FAST = {"probe": "perceiver-decoder", "lr": 5e-3, "width": 64, "depth": 1, "epochs": 20}


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest single-threaded, and CI runs two test workers on two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _task(**kw) -> ReportGenerationTask:
    """The task on a one-row manifest with the phantom's finding columns (its scored labels)."""
    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      "report": ["No nodule."], "lung_nodule": [0], "liver_lesion": [0],
                      "kidney_cyst": [0], "pleural_effusion": [0]})
    return ReportGenerationTask(SPEC, Dataset(DatasetCard(name="d", version="1", licence="-",
                                                          tasks=(SPEC,)), m, root=None), **kw)


def _objects(items):
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def test_open_clip_vocab_round_trip():
    texts = ["FINDINGS: A 5.5 mm nodule in the right upper lobe.", "No pleural effusion."]
    v = rd.ClipVocab(texts)
    ids = v.encode(texts[0], 64)
    assert ids[0] == v.bos and ids[-1] == v.eos and v.size < 40  # compact, not 49408 outputs
    assert v.decode(ids[1:]) == "findings: a 5.5 mm nodule in the right upper lobe."
    assert v.encode("zebra", 8) == [v.bos, v.unk, v.eos]  # unseen BPE ids -> unk
    assert v.encode(texts[0], 5) == ids[:5]  # cut, and then without eos
    assert rd.clean("small effusion , 2 . 5 cm .") == "small effusion, 2.5 cm."


def test_decoder_is_causal_and_conditioned():
    torch.manual_seed(0)
    model = rd.ReportModel(rd.PerceiverResampler(5, 3, 8, 64, 2), rd.TextDecoder(30, 64, 2, 16))
    model.eval()
    emb, grid = torch.randn(2, 5), torch.randn(2, 8, 3)
    ids = torch.randint(0, 30, (2, 10))
    out = model(emb, grid, ids)
    assert out.shape == (2, 10, 30)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 30
    # logits up to position 5 never see tokens 6+; later ones do
    assert torch.allclose(out[:, :6], model(emb, grid, changed)[:, :6], atol=1e-5)
    assert not torch.allclose(out[:, 6:], model(emb, grid, changed)[:, 6:])
    assert not torch.allclose(out, model(emb, grid + 1, ids))  # the grid reaches the text
    assert model.resampler(emb, grid).shape == (2, 16, 64)


def test_beam_search_finds_the_likelier_report_greedy_misses():
    bos, eos, a, b = 1, 2, 3, 4
    table = {(bos,): {a: 0.55, b: 0.45}, (bos, a): {eos: 0.4, a: 0.3, b: 0.3},
             (bos, b): {eos: 0.9, a: 0.1}}

    def step(lat, ids):
        out = torch.full((len(ids), 5), -1e9)
        for i, row in enumerate(ids.tolist()):
            for tok, p in table.get(tuple(row), {eos: 1.0}).items():
                out[i, tok] = math.log(p)
        return out

    lat = torch.zeros(1, 1, 1)
    assert rd.greedy(step, lat, bos, eos, 8) == [[a, eos]]  # p = 0.55 * 0.4 = 0.22
    assert rd.beam_search(step, lat, bos, eos, 8, beam=2) == [[b, eos]]  # p = 0.45 * 0.9
    assert rd.beam_search(step, lat, bos, eos, 8, beam=1) == [[a, eos]]
    assert rd.greedy(step, torch.zeros(2, 1, 1), bos, eos, 2) == [[a], [a]]  # cut at max_len


def test_several_seeds_keep_the_consensus_report():
    # per case, the candidate with the highest mean ROUGE-L to the others (first on ties)
    seeds = [["a b c", "x"], ["a b d", "x y"], ["a b c", "z"]]
    assert _consensus(seeds) == ["a b c", "x"]


def test_pool_features_averages_blocks_and_moves_the_affine():
    tokens = np.arange(2 * 8 * 8 * 4, dtype=np.float32).reshape(2, 8, 8, 4)
    affine = np.diag([3.0, 3.0, 5.0, 1.0])
    affine[:3, 3] = [-10, 20, 7]
    f = pool_features(Features(np.ones(3), tokens, affine), cells=4)
    assert f.tokens.shape == (2, 4, 4, 4)
    assert f.tokens[1, 0, 0, 0] == pytest.approx(tokens[1, :2, :2, :1].mean())
    # pooled cell (0, 0, 0) covers old tokens 0-1 (x, y) and 0 (z): its centre is (0.5, 0.5, 0)
    assert f.token_affine @ [0, 0, 0, 1] == pytest.approx(affine @ [0.5, 0.5, 0, 1])
    assert pool_features(Features(np.ones(3))).tokens is None


def test_search_space_is_the_same_for_every_model():
    task = _task()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    params = task.suggest(trial, 0)
    assert set(params) == {"probe", "lr", "width", "depth", "epochs"}
    assert 1e-4 <= params["lr"] <= 3e-3 and params["width"] in (64, 128)
    assert params["depth"] in (1, 2) and params["epochs"] in (20, 30, 40, 50, 60)
    fixed = {k: v for k, v in params.items() if k != "probe"}
    assert task.suggest(optuna.trial.FixedTrial(fixed), 0) == params  # refit re-draws the same
    assert task.is_stochastic(params)  # a trained network: the engine refits it with several seeds
    assert task.direction == "maximize" and task.main_metric == "finding_f1"
    assert task.labels == ("Lung nodule", "Pleural effusion", "Liver lesion", "Kidney cyst")


def _phantom_reports(n: int):
    """Reports and true findings of ``n`` sampled phantom patients (no images needed)."""
    from ctbench.phantom import FINDINGS, _report
    from ctbench.phantom_anatomy import sample_patient

    rows = []
    for i in range(n):
        p = sample_patient(np.random.default_rng([0, 0, i]))
        rows.append({"image": f"{i}.nii.gz", "report": _report(p, np.random.default_rng([0, 4, i])),
                     **{f: int(p.has(f)) for f in FINDINGS}})
    return pd.DataFrame(rows), FINDINGS


def test_oracle_features_give_faithful_reports_random_features_do_not():
    """Features = the true findings (``OracleEncoder``'s table + its noise) -> finding F1 > 0.9;
    random features -> the decoder writes its training majority, at or below chance."""
    from tests.fakes import oracle_table

    df, findings = _phantom_reports(100)
    table = oracle_table(df, findings)
    rng = np.random.default_rng(0)
    oracle = np.stack([table[i] for i in df["image"]]) + rng.normal(0, 0.1, (len(df), 4))
    noise = rng.normal(size=oracle.shape)
    y = df["report"].to_numpy(dtype=object)
    tr, te = slice(0, 80), slice(80, None)
    task = _task()
    scores = {}
    for name, X in (("oracle", oracle), ("random", noise)):
        feats = task.inputs([Features(x) for x in X])
        pred = task.fit_predict(FAST, feats[tr], y[tr], feats[te], [0])
        assert pred.dtype == object and len(pred) == 20 and all(isinstance(p, str) for p in pred)
        scores[name] = tm.finding_f1_micro(y[te], pred, task.labels)
    # chance: F1 of training reports drawn at random for the test cases
    chance = np.mean([tm.finding_f1_micro(y[te], rng.permutation(y[tr])[:20], task.labels)
                      for _ in range(50)])
    print(f"finding F1: oracle {scores['oracle']:.3f}, random {scores['random']:.3f}, "
          f"chance {chance:.3f}")
    assert scores["oracle"] > 0.9
    assert scores["random"] < chance + 0.1 and chance < 0.6


def test_runner_writes_reports_beside_the_result(small_phantom, tmp_path, monkeypatch):
    """Through the real runner with a token-grid encoder; a tiny fixed probe keeps it fast."""
    from ctbench.runner import RunConfig, run

    def tiny(self, trial, seed):
        return {"probe": "perceiver-decoder", "lr": trial.suggest_float("lr", 3e-3, 3e-3),
                "width": 64, "depth": 1, "epochs": trial.suggest_int("epochs", 3, 3)}

    monkeypatch.setattr(ReportGenerationTask, "suggest", tiny)
    cfg = RunConfig(model="test-histogram", task="report-generation", dataset=str(small_phantom),
                    weights="random", trials=1, seed=0, device="cpu", out=str(tmp_path / "r"),
                    n_boot=50)
    path, result = run(cfg)
    assert set(result["metrics"]) == {"finding_f1", "finding_f1_macro", "finding_precision",
                                      "finding_recall", "bleu4", "rouge_l"}
    assert result["probe"]["best_params"] == {"probe": "perceiver-decoder", "lr": 3e-3,
                                              "width": 64, "depth": 1, "epochs": 3}
    assert result["artifacts"] == ["reports.jsonl", "finding_scores.json"]
    preds = pd.read_csv(path.parent / "predictions.csv", keep_default_na=False)
    assert len(preds) == result["split"]["counts"]["test"]
    manifest = pd.read_csv(small_phantom / "manifest.csv").set_index("case_id")
    assert preds["y_report"].tolist() == manifest.loc[preds["case_id"], "report"].tolist()
    lines = [json.loads(x) for x in (path.parent / "reports.jsonl").read_text().splitlines()]
    assert [x["generated"] for x in lines] == preds["p_report"].tolist()
    assert [x["reference"] for x in lines] == preds["y_report"].tolist()
    scores = json.loads((path.parent / "finding_scores.json").read_text())
    assert [r["label"] for r in scores["scored"]] == ["Lung nodule", "Pleural effusion",
                                                      "Liver lesion", "Kidney cyst"]
    assert len(scores["all_labels"]) == 20
    if result["metrics"]["rouge_l"]["value"] is not None:
        assert result["metrics"]["rouge_l"]["value"] == pytest.approx(
            tm.rouge_l(preds["y_report"], preds["p_report"]))


def test_options_and_user_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("CTBENCH_REPORT_BEAM", "3")
    assert _task().beam == 3 and _task(beam=1).beam == 1
    monkeypatch.setenv("CTBENCH_REPORT_BEAM", "wide")
    with pytest.raises(CTBenchError, match="CTBENCH_REPORT_BEAM"):
        _task()
    monkeypatch.delenv("CTBENCH_REPORT_BEAM")
    with pytest.raises(CTBenchError, match="no config.json"):
        _task(llm=str(tmp_path / "missing"))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text("{}")
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # as if not installed
    with pytest.raises(CTBenchError, match="pip install 'ctbench\\[llm\\]'"):
        _task(llm=str(tmp_path / "lm"))
    two = SPEC.model_copy(update={"targets": ("report", "case_id")})
    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      "report": ["x"]})
    with pytest.raises(CTBenchError, match="one target column"):
        ReportGenerationTask(two, Dataset(DatasetCard(name="d", version="1", licence="-",
                                                      tasks=(two,)), m, root=None))
    usable = _task().usable(pd.DataFrame({"report": ["ok", None, "  "]}))
    assert usable.tolist() == [True, False, False]


def test_frozen_local_language_model_with_a_trained_prefix(tmp_path, monkeypatch):
    """A tiny randomly initialised GPT-2 saved in the test (nothing downloaded): only the
    resampler + projector train, the LM's weights stay as loaded, reports come back as text."""
    transformers = pytest.importorskip("transformers")

    cfg = transformers.GPT2Config(vocab_size=49408, n_positions=256, n_embd=32, n_layer=1,
                                  n_head=2, bos_token_id=49406, eos_token_id=49407)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "lm")  # no tokenizer files
    monkeypatch.setenv("CTBENCH_REPORT_LLM", str(tmp_path / "lm"))
    task = _task()
    assert task.llm == str(tmp_path / "lm") and task.probe_settings()["llm"] == task.llm
    lm, codec = rd.load_llm(task.llm)
    assert isinstance(codec, rd.ClipCodec)
    y = _objects(["No pleural effusion. A 5 mm nodule.", "Small right pleural effusion."] * 3)
    feats = task.inputs([Features(np.random.default_rng(i).normal(size=4)) for i in range(6)])
    fixed = {k: v for k, v in FAST.items() if k != "probe"}
    assert task.suggest(optuna.trial.FixedTrial(fixed), 0)["probe"] == "perceiver-llm-prefix"
    pred = task.fit_predict({**FAST, "epochs": 2}, feats[:4], y[:4], feats[4:], [0])
    assert len(pred) == 2 and all(isinstance(p, str) for p in pred)
    lm_now = task._lm[0].state_dict()
    assert all(torch.equal(lm_now[k], v) for k, v in lm.state_dict().items())
    head = rd.LLMHead(lm, 64)
    model = rd.ReportModel(rd.PerceiverResampler(4, None, 64, 64, 1), head)
    seqs = [codec.encode(t, 32) for t in y]
    emb = torch.randn(6, 4)
    history = rd.train(model, emb, None, seqs, codec.pad, rd.TrainConfig(1e-2, 8, batch_size=6), 0)
    assert history[-1] < history[0]  # the prefix alone lowers the frozen LM's loss
    assert not any(p.requires_grad for p in lm.parameters())
