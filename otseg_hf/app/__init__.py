"""The interactive demo app (Gradio, `pip install -e ".[app]"`): `python -m otseg_hf.app [--model FOLDER]`.

`interface` builds the page around a zero-shot segmentation pipeline, `drawing` draws the overlays (both import
neither otseg_hf nor each other's package, so `otseg-export --space` copies them into a Space folder as they are),
`__main__` starts it on the shipped world model or a given folder.
"""
