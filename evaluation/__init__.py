"""What evaluate.py measures, a module per job; evaluate.py is their command line.

    folder_scores.py     NIQE of every image in folders
    paper_comparison.py  the paper's comparison of a run (-paper): NIQE against plain upscaling, PSNR
    held_out_table.py    PULSE on faces drawn from a generator, against their truth (-generated)
    row_settings.py      the held-out table's -rows: changes of the 2020 defaults
    shared.py            what the jobs share: a folder's images, PSNR, the numbers of their tables
"""
