# La recherche locale dans les conversations.

search-title = Rechercher
search-field = Rechercher dans les conversations
search-button = Rechercher
search-searching = Recherche…
search-hint = La recherche se fait sur cet appareil seulement : le serveur ne peut pas lire vos messages.
search-none = Aucun message ne contient « { $text } ».
search-results = { $count ->
    [one] 1 résultat
   *[other] { $count } résultats
}
search-more = Seuls les { $count } résultats les plus récents sont affichés : précisez votre recherche.
search-result = { $conversation } — { $sender }, { $date }
search-open = Ouvrir { $conversation } à ce message
search-event-sender = Relais
