"""Text: word vectors (`vectors`, `readers`), the tokenizer, domain word2vec, tag and query vectors.

Follows Won, Oramas, Nieto, Gouyon & Serra, "Multimodal metric learning for tag-based music
retrieval" (ICASSP 2021), sections 2.2.2 and 4.3; Choi et al. (ISMIR 2019), which they build on,
use GloVe. Import the module you need: `musemb.text.readers.load_word_vectors`,
`musemb.text.word2vec.train_word2vec`, `musemb.text.tags.tag_matrix`, ...
"""
