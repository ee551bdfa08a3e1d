"""Tokenizer helpers: the offline byte tokenizer of tiny-gpt, and the fixes every
loaded tokenizer gets (pad = eos, a finite model_max_length)."""

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOT = "<|endoftext|>"


def byte_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """Offline byte tokenizer: ids 0..255 are bytes; 256 = <|endoftext|> = eos = pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    # byte-level BPE spells every byte as a printable character: printable bytes stand
    # for themselves, the others get the code points 256, 257, … in byte order
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    extra = iter(range(256, 512))
    chars = {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}
    vocab = {c: b for b, c in chars.items()} | {EOT: 256}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per byte
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                 use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, pad_token=EOT,
                                   model_max_length=max_length)


def fix_tokenizer(tok: PreTrainedTokenizerBase, n_ctx: int | None):
    """pad = eos when missing (as the official code does); a finite model_max_length."""
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if n_ctx and (tok.model_max_length is None or tok.model_max_length > 10**6):
        tok.model_max_length = n_ctx
    return tok
