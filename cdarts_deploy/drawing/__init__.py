"""Pictures of genotypes (matplotlib only): DARTS cells as left-to-right graphs, chain genotypes as strips.

    from cdarts_deploy import genotype, drawing
    drawing.plot_genotype(genotype.load("cdarts_cifar"), "out/")   # out/cdarts_cifar_normal.png, ..._reduce.svg, ...
"""

from cdarts_deploy.drawing.pictures import plot_genotype

__all__ = ["plot_genotype"]
