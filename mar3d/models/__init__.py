"""Neural networks: reusable layers, the Pyramid VAE, and (later) the cascaded MARs."""
