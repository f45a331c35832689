"""SUN RGB-D as preprocessed by Total3D/Im3D, converted into scene records (DESIGN.md)."""
