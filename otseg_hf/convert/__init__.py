"""Conversion of the OTSeg authors' mmsegmentation checkpoints into OTSeg folders."""
