"""Import Caffe's bvlc_alexnet.caffemodel (BVLC model zoo) as an alexnet_mp checkpoint.

    python tools/import_caffe.py bvlc_alexnet.caffemodel --mean imagenet_mean.binaryproto --names synset_words.txt --output caffe_alexnet.pt
    python tools/import_caffe.py bvlc_alexnet.caffemodel --mean ilsvrc_2012_mean.npy --output caffe_alexnet.pt

The checkpoint runs in tools/evaluate.py, tools/predict.py, tools/visualize.py
and alexnet_mp.load_for_inference with no extra flags, and starts a fine-tune
with tools/train.py --weights caffe_alexnet.pt --data-path STORE. README:
"Trained weights".
"""
import sys

from alexnet_mp.cli.import_caffe import main

if __name__ == "__main__":
    sys.exit(main())
