"""bridge: exchange between 1C:Enterprise (CommerceML) and a CRM."""

__version__ = "0.1.2"
