"""Neural network building blocks (torch modules), apart from the solvers that train them."""
