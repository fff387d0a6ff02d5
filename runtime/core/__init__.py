"""Pure tensor code of flow matching: paths, timestep samplers and shifts, losses, ODE solvers, oracles."""
