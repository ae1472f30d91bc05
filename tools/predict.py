"""Top-5 classes of images, ten-crop by default (§4.1).

    python tools/predict.py --checkpoint runs/demo/model_best.pt photo.jpg more_photos/
    alexnet-predict --checkpoint C --crops 1 photo.jpg
    python tools/predict.py --checkpoint C --device mps photo.jpg

Class names and the mean image come from the training checkpoint (a bare state
dict needs --data-path STORE). Files that are not images are reported and skipped.
"""
import sys

from alexnet_mp.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
