"""The network: the paper's Figure 2 as a table (`arch`), its two unusual layers
(`layers`: per-column LRN, the paper's dropout) and the grouped and per-column
nets built from them (`net`). Nothing here knows of devices other than its own
or of processes: placements are applied from `alexnet_mp.distributed`."""
