"""Caffe's trained AlexNet (bvlc_alexnet.caffemodel) as a checkpoint of this project.

`wire` reads protocol buffers' wire format, `netparam` holds Caffe's messages as its
schemas and reads a .caffemodel into layers, `convert` checks that the layers are
bvlc_alexnet's shape and turns them into the canonical state dict, the config of
the variant they need, the class list and the mean image. `synthetic` writes a
bvlc_alexnet-shaped file of random weights, for the benchmark. tools/import_caffe.py
is the command line. Nothing under `alexnet_mp.model` imports this package: the
network knows the variant only as config fields.
"""
