/* The EXIF orientation tag and its XMP stand-in, shared by the JPEG (APP1)
 * and PNG (eXIf, iTXt) routes. */
#ifndef FL_EXIF_H
#define FL_EXIF_H

#include "fl_common.h"

/* The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block that
 * starts with its byte-order mark ("II*\0" or "MM\0*"): 1..8; 0 when IFD0
 * is readable and has no such tag; -1 when the block is malformed (no TIFF
 * header, IFD0 out of bounds) or the tag holds no value in 1..8; -2 when
 * the tag is of a type or count other than one SHORT or LONG. Every offset
 * comes from the file, so each is checked. Pillow's exif_transpose leaves
 * the image alone in the -1 cases, and may turn it in the -2 one (it reads
 * an SSHORT 6 as 6); a caller that must know what Pillow would make of
 * either asks Pillow. */
int fl_exif_orientation(const uint8_t *tiff, size_t n);

/* The orientation an XMP packet gives Pillow's getexif when the EXIF has no
 * Orientation tag: the digit of the first "tiff:Orientation" followed by
 * '="' or '>' and a digit (Pillow's regex tiff:Orientation(="|>)([0-9])),
 * 0..9; -1 when there is none. */
int fl_xmp_orientation(const uint8_t *xmp, size_t n);

#endif
