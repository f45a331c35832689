"""The object classes, in the fixed order every dataset, model and metric uses.

The first ten are the AP3D classes of the SUN RGB-D protocol; datasets map their own
classes onto these or drop them.
"""
CLASSES = ('bed', 'chair', 'sofa', 'table', 'desk', 'dresser', 'nightstand', 'sink', 'cabinet',
           'lamp')
AP_CLASSES = CLASSES[:10]
