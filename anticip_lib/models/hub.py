"""The Hugging Face Hub, failing fast when it cannot be reached."""

from .. import paths


def from_hub(load, hub_id: str, revision: str, **kw):
    """`load(hub_id)` from the local HF cache, else after a short reachability probe.

    `load` is a `from_pretrained` (tokenizer, config or model); it raises OSError with
    the remedies when the id is not cached and the Hub is offline or unreachable.
    """
    try:
        return load(hub_id, revision=revision, local_files_only=True, **kw)
    except OSError:
        pass  # not cached: try the network, but fail fast
    why = "offline mode is on (HF_HUB_OFFLINE)"
    if not paths.hub_offline():
        import huggingface_hub
        try:
            huggingface_hub.model_info(hub_id, revision=revision, timeout=10)
            return load(hub_id, revision=revision, **kw)
        except Exception as e:  # DNS, timeout, 404, gated repo…
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise OSError(
        f"{hub_id} @ {revision} is not in the local Hugging Face cache and the Hub "
        f"cannot be used ({why}). Either run once with internet so that it is cached, "
        "or pass a local checkpoint folder as model=..., or use an embedded model such "
        "as model='smollm2-135m' (for smoke tests: model='tiny-gpt', init='pythia'; "
        "random-init Pythia can take tokenizer='smollm2-135m').")
