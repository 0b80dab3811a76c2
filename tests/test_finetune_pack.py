"""Shared-schema packing (finetune/pack.py): examples that begin with the same schema are trained in one sequence
that holds it once, and the model computes for each of them what it computes for that example alone."""

from __future__ import annotations

import pytest

from finetune.pack import PAD, PREFIX, attention_mask, build_pack, collate_packs, pack_examples, packing_stats, \
    prompt_length
from finetune.train import Encoded, encode, learned_loss


def example(prompt: list[int], reply: list[int]) -> Encoded:
    return Encoded(prompt + reply, [-100] * len(prompt) + reply, "ts")


def members_of(pack) -> list[list[int]]:
    """Each member's whole token list, rebuilt from the pack: the prefix, then its own tokens."""
    prefix = pack.input_ids[: pack.shared]
    return [prefix + [t for t, s in zip(pack.input_ids, pack.segments) if s == m] for m in range(1, pack.members + 1)]


SCHEMA_A, SCHEMA_B = list(range(100, 180)), list(range(300, 380))


def test_examples_sharing_a_schema_are_packed_and_each_is_whole_again_from_its_pack():
    examples = [example(SCHEMA_A + [1, 2, 3], [7, 8]), example(SCHEMA_B + [4], [9]),
                example(SCHEMA_A + [1, 5], [6]), example(SCHEMA_A + [2], [9, 9, 9]), example(SCHEMA_B + [5, 6], [1])]
    packs = pack_examples(examples, max_tokens=1000)
    assert [p.members for p in packs] == [3, 2]
    assert sorted(map(tuple, (m for p in packs for m in members_of(p)))) == sorted(tuple(e.input_ids) for e in examples)
    first = packs[0]
    assert first.shared == len(SCHEMA_A) and first.input_ids[: first.shared] == SCHEMA_A
    # each member's own tokens take the positions they have alone, and its labels come along
    for number in range(1, first.members + 1):
        own = [i for i, s in enumerate(first.segments) if s == number]
        assert [first.position_ids[i] for i in own] == list(range(first.shared, first.shared + len(own)))
        assert first.labels[own[0]] == -100  # a member begins inside its prompt
    assert sum(label != -100 for label in first.labels) == 2 + 1 + 3
    stats = packing_stats(examples, packs)
    assert stats["tokens_unpacked"] == sum(map(len, examples)) and stats["tokens_packed"] == sum(map(len, packs))
    assert stats["tokens_unpacked"] - stats["tokens_packed"] == 2 * len(SCHEMA_A) + len(SCHEMA_B)


def test_the_shared_prefix_stops_inside_every_prompt_even_for_identical_prompts():
    same = [example(SCHEMA_A + [1], [7]), example(SCHEMA_A + [1], [8])]
    (pack,) = pack_examples(same, max_tokens=1000)
    assert pack.shared == len(SCHEMA_A) == prompt_length(same[0]) - 1
    assert members_of(pack) == sorted(e.input_ids for e in same)


def test_a_pack_stays_within_its_token_bound_and_a_short_shared_start_is_not_worth_a_pack():
    many = [example(SCHEMA_A + [i], [i, i]) for i in range(1, 11)]
    packs = pack_examples(many, max_tokens=len(SCHEMA_A) + 3 * 3)
    assert [p.members for p in packs] == [3, 3, 3, 1] and max(map(len, packs)) <= len(SCHEMA_A) + 9
    barely = [example([5, 6] + SCHEMA_A, [1]), example([5, 7] + SCHEMA_B, [2])]  # two tokens in common
    assert [p.members for p in pack_examples(barely, max_tokens=1000)] == [1, 1]
    long = example(SCHEMA_A * 3, [1])
    assert [len(p) for p in pack_examples([long], max_tokens=10)] == [len(long)]


def test_the_mask_keeps_members_apart_and_padding_to_itself():
    import torch

    segments = torch.tensor([[PREFIX, PREFIX, 1, 1, 2, PAD]])
    allowed = attention_mask(segments, "sdpa")[0, 0]
    assert allowed.dtype == torch.bool
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],  # member 2 sees the prefix and itself, not member 1
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]
    assert allowed.int().tolist() == expected
    additive = attention_mask(segments, "eager")[0, 0]
    assert ((additive == 0) == allowed).all() and (additive[~allowed] < -1e30).all()


@pytest.fixture(scope="module")
def small_model(model_cache):
    from transformers import AutoTokenizer

    from finetune.train import describe_model_source

    _, folder, _ = describe_model_source("smollm2-135m")
    return folder, AutoTokenizer.from_pretrained(folder)


def chat(schema: str, question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"You are an expert in SQLite SQL.\n\n{schema}"},
            {"role": "user", "content": f"Question: {question}\n\nWrite one SQL query."},
            {"role": "assistant", "content": answer}]


SCHEMA = ("CREATE TABLE singer (\n  singer_id INTEGER PRIMARY KEY,\n  name TEXT, -- e.g. 'Joe Sharp', 'Timbaland'\n"
          "  country TEXT, -- e.g. 'Netherlands', 'United States'\n  age INTEGER\n);\n"
          "CREATE TABLE concert (\n  concert_id INTEGER PRIMARY KEY,\n  concert_name TEXT,\n  year TEXT\n);")


@pytest.mark.model
def test_the_loss_with_logits_only_where_learned_is_the_models_own_and_so_is_its_gradient(small_model):
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.train import collate

    folder, tokenizer = small_model
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    examples = [Encoded(*encode(tokenizer, chat(SCHEMA, q, a)), "ts") for q, a in [
        ("How many singers are there?", "SELECT count(*) FROM singer"),  # rows of different lengths: padding,
        ("List the names of singers from France, oldest first.",  # and their learned tokens at other positions
         "SELECT name FROM singer WHERE country = 'France' ORDER BY age DESC")]]
    batch = collate(tokenizer.pad_token_id)(examples)
    grads = []
    for loss_of in (lambda: model(**batch).loss, lambda: learned_loss(model, batch)):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        grads.append((loss.detach(), model.model.layers[-1].mlp.down_proj.weight.grad.clone()))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-6)


@pytest.mark.model
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_a_pack_gives_each_member_the_loss_it_has_alone(small_model, implementation):
    import torch
    from transformers import AutoModelForCausalLM

    folder, tokenizer = small_model
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=implementation)
    model.eval()
    examples = [Encoded(*encode(tokenizer, chat(SCHEMA, q, a)), "ts") for q, a in [
        ("How many singers are there?", "SELECT count(*) FROM singer"),
        ("List the names of singers from France, oldest first.",
         "SELECT name FROM singer WHERE country = 'France' ORDER BY age DESC"),
        ("Which concerts took place in 2014?", "SELECT concert_name FROM concert WHERE year = '2014'")]]
    (pack,) = pack_examples(examples, max_tokens=4096)
    assert pack.members == 3 and pack.shared > 100

    def token_losses(logits, labels):  # the causal LM loss, token by token (-100: not learned)
        shifted = labels[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits[0, :-1], shifted.clamp(min=0), reduction="none")
        return losses[shifted != -100]

    with torch.no_grad():
        alone = [token_losses(model(input_ids=torch.tensor([e.input_ids])).logits, torch.tensor([e.labels]))
                 for e in sorted(examples, key=lambda e: e.input_ids)]
        batch = collate_packs(tokenizer.pad_token_id, implementation)([pack])
        out = model(**batch)
        packed = token_losses(out.logits, batch["labels"])
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)
    # what the training loop takes: the mean over the learned tokens, as for the examples in one batch, with
    # the vocabulary projection only where a token is learned
    torch.testing.assert_close(out.loss, torch.cat(alone).mean(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(learned_loss(model, batch), out.loss, rtol=1e-5, atol=1e-5)
    # and without the mask the members would see each other: the check above is not vacuous
    with torch.no_grad():
        unmasked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert not torch.allclose(token_losses(unmasked, batch["labels"]), torch.cat(alone), atol=1e-3)
