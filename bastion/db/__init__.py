"""Database-enforced masking: masked views the bastion provisions, one account per grant, checks."""
