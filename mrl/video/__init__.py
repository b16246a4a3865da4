"""Video search: synthetic corpora with ground truth, frame sampling and scene segmentation over the image encoder."""
