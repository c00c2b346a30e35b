"""Generated test inputs: a class-conditional GAN that samples new labelled inputs from noise.

``attack="generated"`` on the robust marker compares a model's accuracy on
real evaluation samples with its accuracy on samples drawn from a
class-conditional generator (an AC-GAN, Odena et al. 2017, with the hinge
loss and a spectrally normalised discriminator, Miyato et al. 2018) that was
trained on ``robust_train_data``. A generated sample counts only when an
independent reference classifier, trained on the same real data, gives it
the intended class with at least the ``validity`` confidence.

Modules: :mod:`.networks` (generator, discriminator, reference classifier),
:mod:`.training` (seeded, step-budgeted training), :mod:`.store` (the cache),
:mod:`.evaluation` (sampling, validity, the numbers); its gallery is drawn by
:mod:`pytest_advrobust.reports.generated_gallery`.
Nothing here is imported when the plugin loads.
"""
