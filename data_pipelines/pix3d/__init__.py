"""Pix3D (images of furniture with aligned 3D models), converted into scene records and
canonical shapes (DESIGN.md)."""
