"""The GPU campaign that continues: each lease of a GPU extends one stored run per GPU kind.

plan     what the campaign measures, step by step, as single cells (value order)
stored   what a machine folder already holds: cells, their wall times, earlier leases, the
         walls recorded before the campaign (step-walls.json)
kernelcases  the kernel benchmark's deciding sizes, one item each, from its own tables
costs    each item's expected wall time from stored measurements, and where it came from
execute  a lease: the missing items in value order, each step stopped at its budget
bundle   what a lease wrote, packed into a few files and laid back into profiles/
gpudocs  docs/gpu.md's measured tables, regenerated from the stored runs
"""
