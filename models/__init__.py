"""Model plugins shipped with exportkit; each subpackage registers itself on import."""
