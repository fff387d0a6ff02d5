"""Prompt enhancers (runtime/enhance.py): a sandboxed template whose errors name their line, the vocabulary
enhancer that rewrites a short prompt into a caption of the data holding all its words, module plugins;
each a pure function of (prompt, seed), the same in another process; the model reads the rewrite, the
scores and labels the original; the identity reproduces the plain request exactly."""
import subprocess
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from flowspec.runtime.data.shapes import make_scene
from flowspec.runtime.enhance import EnhancerError, build_enhancer, vocabulary_rewrite
from flowspec.schemas.rewards import PromptEnhancer

BLOCK = TypeAdapter(PromptEnhancer)
CAPTIONS = [make_scene(0, i, (1, 4)).caption for i in range(400)]
WORDS = sorted({w for c in CAPTIONS for w in c.split()})


def enhancer(**block):
    return build_enhancer(BLOCK.validate_python(block), lambda n: CAPTIONS[:n])


def test_a_template_renders_prompt_and_seed_in_a_sandbox_whose_errors_name_their_line():
    assert enhancer(kind="template", template="{{ prompt }}, seed {{ seed }}")(["a red circle"], 7) == \
        ["a red circle, seed 7"]
    unsafe = enhancer(kind="template", template="{{ prompt }}\n{{ prompt.__class__.__mro__ }}")
    with pytest.raises(EnhancerError, match=r"template \(line 2\) failed on 'a circle': SecurityError"):
        unsafe(["a circle"], 0)
    with pytest.raises(EnhancerError, match=r"\(line 3\) failed on 'x': UndefinedError: 'colour' is undefined"):
        enhancer(kind="template", template="{{ prompt }}\n\n{{ colour }}")(["x"], 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), st.integers(0, 2**31 - 1))
def test_the_vocabulary_rewrite_is_a_caption_holding_every_word_of_the_prompt(words, seed):
    prompt = " ".join(words)
    out = enhancer(kind="vocabulary", captions=400)([prompt], seed)[0]
    holding = [c for c in CAPTIONS if all(c.split().count(w) >= words.count(w) for w in words)]
    if holding:
        assert out in holding
    else:
        assert out == prompt  # nothing in the data says more: the prompt passes unchanged
    assert enhancer(kind="vocabulary", captions=400)([prompt], seed)[0] == out  # a pure function


def test_the_vocabulary_rewrite_is_the_same_in_another_process():
    prompts = ["a circle", "two squares", "a red", "a large", "blue"]
    here = [vocabulary_rewrite(CAPTIONS)(p, s) for p in prompts for s in range(3)]
    code = ("from flowspec.runtime.data.shapes import make_scene\n"
            "from flowspec.runtime.enhance import vocabulary_rewrite\n"
            "captions = [make_scene(0, i, (1, 4)).caption for i in range(400)]\n"
            f"print(repr([vocabulary_rewrite(captions)(p, s) for p in {prompts!r} for s in range(3)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "123"},
                         check=True)
    assert eval(out.stdout) == here
    assert len(set(here[:3])) > 1  # the seed picks among the captions


def test_a_module_enhancer_is_called_and_must_return_a_string(tmp_path, monkeypatch):
    (tmp_path / "my_enhancers.py").write_text("def louder(prompt, seed):\n    return prompt.upper()\n"
                                              "def broken(prompt, seed):\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    context = {"spec_dir": str(tmp_path)}
    louder = build_enhancer(BLOCK.validate_python({"kind": "module", "target": "my_enhancers:louder"}, context=context))
    assert louder(["a circle"], 0) == ["A CIRCLE"]
    broken = build_enhancer(BLOCK.validate_python({"kind": "module", "target": "my_enhancers:broken"}, context=context))
    with pytest.raises(EnhancerError, match="returned int for 'a circle', not a string"):
        broken(["a circle"], 0)
    with pytest.raises(Exception, match="has no 'missing'"):
        BLOCK.validate_python({"kind": "module", "target": "my_enhancers:missing"}, context=context)


def test_the_model_reads_the_rewrite_and_the_identity_changes_nothing():
    from flowspec.runtime.ops.sample import request

    stage = types.SimpleNamespace(
        train=types.SimpleNamespace(samples=types.SimpleNamespace(num_steps=4, solver="euler", cfg_scale=2.0)),
        data=types.SimpleNamespace(curriculum=[types.SimpleNamespace(resolution=32)]), sampling=dict)
    ctx = types.SimpleNamespace(stage=stage, classes=None, seed=5, enhancer=None)
    plain = request(ctx, ["a circle", "two squares"], 2, seed=1)
    ctx.enhancer = enhancer(kind="identity")
    assert request(ctx, ["a circle", "two squares"], 2, seed=1) == plain
    ctx.enhancer = enhancer(kind="template", template="{{ prompt }}, centred")
    assert request(ctx, ["a circle", "two squares"], 2, seed=1).prompts == ("a circle, centred", "two squares, centred")
