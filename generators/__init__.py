"""The generator families after the 2020 one, and what every generator shares.

    generator.py   what PULSE asks of a generator (Generator) and the priors it searches under
    fastops.py     the fast path: tensors derived once from frozen weights (bit-identical results)
    stylegan2.py   NVIDIA's StyleGAN2 (stylegan2-ada-pytorch, stylegan3's StyleGAN2 config)
    stylegan3.py   NVIDIA's StyleGAN3, configs T and R
    rosinality.py  rosinality's stylegan2-pytorch
    dcgan.py       the PyTorch tutorial's DCGAN, with its reader

StyleGAN-1, the generator of the 2020 design, stays beside PULSE.py (stylegan.py);
weightfiles/families.py is the registry of the families: how each is read, built and searched.
"""
