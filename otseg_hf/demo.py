"""`python -m otseg_hf.demo`: the README's main job (the offline world demo, `otseg_hf.world.demo`)."""

from .world.demo import main

if __name__ == "__main__":
    main()
