"""The priors that --sample_prior names besides N(0, I), fitted to the training images'
latent means: 'gmm' (latent_prior, a Gaussian mixture) and 'vae' (latent_vae, a second
VAE in latent space). Both modules save, load and sample alike; this says which one a
configuration uses, its file beside the checkpoint, and its name in evaluations."""
from utils.run import latent_prior, latent_vae

FITTED = ('gmm', 'vae')  # the --sample_prior values with a prior fitted to a checkpoint


def module(conf):
    """latent_prior or latent_vae: what fits, saves, loads and samples conf's prior."""
    return {'gmm': latent_prior, 'vae': latent_vae}[conf.sample_prior]


def path(conf, step):
    """Where the fitted prior of conf.sample_prior for checkpoint `step` is kept."""
    if conf.sample_prior == 'gmm':
        return latent_prior.prior_path(conf.modeldir, step, conf.prior_components)
    return latent_vae.prior_path(conf.modeldir, step, conf.prior_vae_width,
                                 conf.prior_vae_steps)


def name(conf):
    """'normal', 'posterior' (the training latents themselves), 'gmmK' for the fitted
    mixture of K components, or 'vaeWxS' for the latent VAE of W units trained S steps."""
    if conf.sample_prior == 'gmm':
        return f'gmm{conf.prior_components}'
    if conf.sample_prior == 'vae':
        return latent_vae.name(conf.prior_vae_width, conf.prior_vae_steps)
    return conf.sample_prior
