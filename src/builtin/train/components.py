#!/usr/bin/env python3
"""The built-in model's components: a cut-down CLIP BPE tokenizer, the two frozen seeded CLIP
text encoders, and the VAE / transformer / scheduler configurations. Shared by train.py,
classifier.py and evaluate.py.

    python3 components.py --out DIR     # writes DIR/tokenizer, DIR/tokenizer_2, DIR/text_encoder(_2)
                                        # and checks them (round trip, no unknown tokens, fast tokenizer)
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import data  # noqa: E402

# ----------------------------------------------------------------------------------------------
# settings (the model's fixed design; recorded in the pipeline folder's noiseshift.json)
# ----------------------------------------------------------------------------------------------

TOKENIZER_MAX_LENGTH = 77          # CLIP context, as SD3 (diffusers reads tokenizer.model_max_length)
MAX_SEQUENCE_LENGTH = 8            # zero "T5" tokens diffusers appends when text_encoder_3 is None
NATIVE = 128                       # native resolution in pixels (16 x 16 latents, 64 image tokens)
LOW = (64, 96)
SCHEDULER_SHIFT = 1.0
TEXT_SEED = 1801                   # frozen text encoders' initialisation
CLIP_L = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              projection_dim=64, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=2,
              projection_dim=96, hidden_act="gelu")
JOINT_ATTENTION_DIM = CLIP_L["hidden_size"] + CLIP_G["hidden_size"]          # 160
POOLED_DIM = CLIP_L["projection_dim"] + CLIP_G["projection_dim"]             # 160

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 64, 64, 64], layers_per_block=1, act_fn="silu", latent_channels=16,
    norm_num_groups=16, sample_size=NATIVE, scaling_factor=1.0, shift_factor=0.0,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, force_upcast=False,
)

TRANSFORMER_CONFIG = dict(
    sample_size=NATIVE // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=4,
    attention_head_dim=32, num_attention_heads=4, joint_attention_dim=JOINT_ATTENTION_DIM,
    caption_projection_dim=128, pooled_projection_dim=POOLED_DIM, pos_embed_max_size=16,
)


# ----------------------------------------------------------------------------------------------
# tokenizer: real CLIP byte-level BPE, vocabulary cut to the grammar
# ----------------------------------------------------------------------------------------------

def bytes_to_unicode():
    """OpenAI CLIP / GPT-2's byte -> printable character map (its order is CLIP's vocab order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words):
    """Plain BPE on the word list (each word once): merge the most frequent adjacent pair
    (ties: the lexicographically smallest) until every word is one token."""
    seqs = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in words}
    merges = []
    while True:
        counts = {}
        for s in seqs.values():
            for a, b in zip(s, s[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def build_vocab():
    b2u = bytes_to_unicode()
    base = list(b2u.values())
    vocab = base + [c + "</w>" for c in base]
    merges = learn_merges(data.GRAMMAR_WORDS)
    for a, b in merges:
        vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab)
    return {t: i for i, t in enumerate(vocab)}, merges


def write_tokenizer(folder, pad_token):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")
    special = {"bos_token": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
               "eos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
               "unk_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
               "pad_token": {"content": pad_token, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    cfg = {"add_prefix_space": False, "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": True,
           "do_lower_case": True, "eos_token": "<|endoftext|>", "errors": "replace",
           "model_max_length": TOKENIZER_MAX_LENGTH, "pad_token": pad_token,
           "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return vocab, merges


class ReferenceBPE:
    """OpenAI's simple_tokenizer algorithm (lower-case, whitespace clean-up, CLIP's regex, byte
    map, rank-ordered BPE), written out independently of `tokenizers`, to cross-check it."""

    def __init__(self, folder):
        import regex
        folder = Path(folder)
        self.vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
        self.ranks = {tuple(l.split()): i for i, l in enumerate(x for x in lines if x)}
        self.b2u = bytes_to_unicode()
        self.pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                 regex.IGNORECASE)

    def bpe(self, token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            r, _ = min(pairs)
            if r == math.inf:
                break
            a, b = [p for p, q in self.ranks.items() if q == r][0]
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    def encode(self, text):
        text = " ".join(text.split()).strip().lower()
        ids = [self.vocab["<|startoftext|>"]]
        for tok in self.pat.findall(text):
            tok = "".join(self.b2u[b] for b in tok.encode("utf-8"))
            ids += [self.vocab[t] for t in self.bpe(tok)]
        return ids + [self.vocab["<|endoftext|>"]]


# ----------------------------------------------------------------------------------------------
# text encoders (frozen at a seeded initialisation)
# ----------------------------------------------------------------------------------------------

def build_text_encoders(vocab, seed=TEXT_SEED):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    encoders = []
    for k, (spec, pad) in enumerate(((CLIP_L, eos), (CLIP_G, 0))):
        cfg = CLIPTextConfig(vocab_size=len(vocab), max_position_embeddings=TOKENIZER_MAX_LENGTH,
                             bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                             layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0, **spec)
        torch.manual_seed(seed + k)
        model = CLIPTextModelWithProjection(cfg).eval()
        g = torch.Generator().manual_seed(seed + 100 + k)
        with torch.no_grad():
            # token and position embeddings of O(1) size, so that the sequence features carry
            # the words clearly (transformers' default init, std 0.02, would make them tiny);
            # every other tensor keeps transformers' seeded default initialisation.
            emb = model.text_model.embeddings
            emb.token_embedding.weight.copy_(torch.randn(emb.token_embedding.weight.shape, generator=g))
            emb.position_embedding.weight.copy_(0.5 * torch.randn(emb.position_embedding.weight.shape, generator=g))
            for layer in model.text_model.encoder.layers:
                for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                            layer.self_attn.out_proj, layer.mlp.fc1, layer.mlp.fc2):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(lin.weight.shape[1]))
                    lin.bias.zero_()
            p = model.text_projection.weight
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        for q in model.parameters():
            q.requires_grad_(False)
        encoders.append(model)
    return encoders


def load_tokenizers(folder):
    from transformers import CLIPTokenizer
    folder = Path(folder)
    return CLIPTokenizer.from_pretrained(folder / "tokenizer"), CLIPTokenizer.from_pretrained(folder / "tokenizer_2")


class PromptEncoder:
    """diffusers' StableDiffusion3Pipeline.encode_prompt without T5, batched and cached by caption:
    prompt_embeds [B, 77 + MAX_SEQUENCE_LENGTH, JOINT_ATTENTION_DIM], pooled [B, POOLED_DIM]."""

    def __init__(self, tokenizers, encoders, max_sequence_length=MAX_SEQUENCE_LENGTH, dtype=torch.float32):
        self.tokenizers, self.encoders = tokenizers, encoders
        self.msl, self.dtype = max_sequence_length, dtype
        self.cache = {}

    @torch.no_grad()
    def _encode(self, prompts):
        seqs, pooled = [], []
        for tok, enc in zip(self.tokenizers, self.encoders):
            ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            out = enc(ids, output_hidden_states=True)
            pooled.append(out[0])
            seqs.append(out.hidden_states[-2])
        clip = torch.cat(seqs, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, JOINT_ATTENTION_DIM - clip.shape[-1]))
        zeros = torch.zeros(len(prompts), self.msl, JOINT_ATTENTION_DIM)
        return torch.cat([clip, zeros], dim=1), torch.cat(pooled, dim=-1)

    def __call__(self, prompts):
        missing = sorted(set(p for p in prompts if p not in self.cache))
        for i in range(0, len(missing), 256):
            chunk = missing[i:i + 256]
            e, p = self._encode(chunk)
            for k, c in enumerate(chunk):
                self.cache[c] = (e[k].to(self.dtype), p[k].to(self.dtype))
        e = torch.stack([self.cache[p][0] for p in prompts])
        p = torch.stack([self.cache[p][1] for p in prompts])
        return e, p


def build_text_side(folder):
    """Write both tokenizers and both text encoders under folder; return (tokenizers, encoders)."""
    folder = Path(folder)
    vocab, _ = write_tokenizer(folder / "tokenizer", "<|endoftext|>")
    write_tokenizer(folder / "tokenizer_2", "!")
    encoders = build_text_encoders(vocab)
    return load_tokenizers(folder), encoders


def check_tokenizers(folder, n=5000, seed=3):
    """Every grammar word is one token, no unknowns, transformers == reference BPE == fast."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast
    folder = Path(folder)
    ref = ReferenceBPE(folder / "tokenizer")
    report = {}
    for sub, pad_id in (("tokenizer", None), ("tokenizer_2", 0)):
        slow = CLIPTokenizer.from_pretrained(folder / sub)
        fast = CLIPTokenizerFast.from_pretrained(folder / sub)
        vocab = json.loads((folder / sub / "vocab.json").read_text(encoding="utf-8"))
        eos = vocab["<|endoftext|>"]
        if pad_id is not None:
            assert slow.pad_token_id == pad_id == vocab["!"], (slow.pad_token_id, vocab["!"])
        else:
            assert slow.pad_token_id == eos
        for w in data.GRAMMAR_WORDS:
            ids = slow(w).input_ids
            assert len(ids) == 3 and ids[1] != eos, (w, ids)
        scenes = data.scene_set(n, seed)
        caps = [data.caption(s, data.caption_rng(seed, k), 0.3) for k, s in enumerate(scenes)]
        caps += ["a red circle", "a blue square", "a green triangle on a white background", "",
                 "A Purple STAR,  on the left.", "a dog riding a bicycle 42"]
        # (not tested: a literal "!" in tokenizer_2, which transformers splits off as the added pad
        # token, id 0, as with SD3's own tokenizer_2)
        longest = 0
        for c in caps:
            a = slow(c).input_ids
            assert a == fast(c).input_ids == ref.encode(c), (c, a, fast(c).input_ids, ref.encode(c))
            assert eos not in a[1:-1], c  # no unknown (unk = <|endoftext|>)
            longest = max(longest, len(a))
        padded = slow(["a red circle"], padding="max_length", max_length=TOKENIZER_MAX_LENGTH).input_ids[0]
        report[sub] = {"vocab_size": len(vocab), "pad_token_id": slow.pad_token_id, "eos_token_id": eos,
                       "bos_token_id": vocab["<|startoftext|>"], "longest_caption_tokens": longest,
                       "example": {"a red circle": padded[:8]}}
    return report


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SCHEDULER_SHIFT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    toks, encs = build_text_side(a.out)
    for name, e in zip(("text_encoder", "text_encoder_2"), encs):
        e.save_pretrained(Path(a.out) / name, safe_serialization=True)
    print(json.dumps(check_tokenizers(a.out), indent=1))
    pe = PromptEncoder(toks, encs)
    e, p = pe(["a red circle", "a blue square", ""])
    print("prompt_embeds", tuple(e.shape), "pooled", tuple(p.shape), "std", float(e[:, :77].std()), float(p.std()))


if __name__ == "__main__":
    main()
