"""Information extraction with GlobalPointer heads: NER, GPLinker relations and events (issue 14)."""
