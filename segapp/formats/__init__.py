"""One implementation of each file-format conversion, shared by the whole package.

The demo's downloads, `segapp segment`'s writer, the evaluators, the trainers and the video
predictor all call these, so that a mask is encoded, boxed, painted and written one way:

    media       which file extensions are images and which are videos (one table)
    images      reading an image file or upload into RGB (the EXIF orientation rule)
    rle         COCO run-length encoding: compressed (str counts) and uncompressed (int counts)
    boxes       box of a mask: inclusive pixel corners, COCO [x, y, w, h], pixel-edge xyxy
    components  8-connected components of a binary mask (small holes and islands)
    label_masks mask files (DAVIS, benchmark gt/, training id masks) as object-id maps
    id_maps     overlapping masks -> one instance-id map (the overlap rule), id PNGs (gray, palette)
    overlay     object colours (palette, per id) blended over an image (per-object opacity, hidden)
    polygons    masks as polygon rings on pixel edges (holes filled, fragments dropped) and back
    coco        COCO annotation fields (RLE or polygons), categories from class labels, documents
    yolo        YOLO-seg label lines and the class list
    mp4         the H.264 MP4 writer (PyAV; OpenCV mp4v without it), atomic
    hashing     SHA-256 of a file

Each module is small and pure (NumPy in, NumPy or bytes out) and has no import-time side effects.
"""
